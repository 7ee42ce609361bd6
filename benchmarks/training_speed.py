"""Training speed and memory on CPU: our frozen soft prompts against stock PEFT prompt tuning and full fine-tuning.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/training_speed.py [--batch 8] [--length 128] [--steps 4] \
        [--questions 1] [--fit-documents 0]

Same backbone, batch, text length and token-classification loss (3 labels) for every method; the text tokens
(``--length`` minus ``--prompt-tokens``, no padding) count for tokens/s, timed over full optimizer steps (forward,
backward, AdamW) after one warm-up step. Backbones: MiniLM (BERT, 6 x 384; transformers' SDPA for everyone) and a
small GatorTron-shaped Megatron-BERT with random weights (4 x 256, GatorTron's vocabulary; stock transformers runs
it in eager attention, ours in SDPA). Methods:

- ``full-fine-tuning``: stock ``AutoModelForTokenClassification``, every weight trains;
- ``peft-prompt-tuning``: stock PEFT, ``get_peft_model(model, PromptTuningConfig(task_type=TOKEN_CLS, ...))``,
  frozen backbone, labels left-padded with -100 by hand for the virtual tokens;
- ``ours-input`` / ``ours-deep``: :class:`PromptedEncoder` with input-layer or deep (key/value) prompts, frozen;
- ``ours-deep-checkpointing``: ``ours-deep`` with activation checkpointing;
- ``ours-late-1/3`` / ``-1/2`` / ``-2/3``: ``ours-deep`` with prompts from layer ``k`` = L/3, L/2 or 2L/3 (late
  prompts; the layers below run once per distinct text; MiniLM: k = 2, 3, 4).

``--questions Q`` makes the batch ``batch / Q`` texts each asked Q questions (prompt blocks), as MRC training asks
every concept type about a window: the rows of one text share the late prompts' lower layers. Every method trains on
the same rows; stock methods see them as separate texts.

Each run is its own forked process: "peak" is its peak resident memory, "train" the part above the memory held
once the model was built (activations, gradients, optimizer state). Ratios compare with stock PEFT and with full
fine-tuning on the same backbone.

``--fit-documents N`` adds the library's own training loop: the quickstart's extractor (7 concept types and their
relation questions, whole windows per batch) trained one epoch by ``fit`` on the first N bundled notes, with prompts
in every layer and from layer L/2, each in its own process; tokens/s as ``fit`` reports it.
"""
from __future__ import annotations

import argparse
import copy
import multiprocessing
import os
import resource
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import transformers
from quickstart_runs import bundled_notes, fit_one_epoch
from stock_peers import StockTagger
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification, PretrainedConfig

from clinical_prompt.backbone import enable_activation_checkpointing, resolve_backbone
from clinical_prompt.prompts import ClinicalPromptConfig, PromptedEncoder
from clinical_prompt.prompts.attention import SDPA_SELF_ATTENTION, use_sdpa_attention
from clinical_prompt.quantization import quantize_backbone
from clinical_prompt.quickstart import QuickstartConfig, quickstart_extractor
from clinical_prompt.schema import load_schema

LABELS = 3
METHODS = ("full-fine-tuning", "peft-prompt-tuning", "ours-input", "ours-deep", "ours-deep-checkpointing",
           "ours-late-1/3", "ours-late-1/2", "ours-late-2/3")
LATE = {"ours-late-1/3": 1 / 3, "ours-late-1/2": 1 / 2, "ours-late-2/3": 2 / 3}  # start layer as a share of L
SMALL_GATORTRON = dict(
    model_type="megatron-bert", hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
    vocab_size=50176, max_position_embeddings=512,
)


@dataclass
class Base:
    """A backbone to train: pretrained weights at ``path``, or random weights of ``config`` when ``path`` is None."""

    name: str
    config: PretrainedConfig
    path: str | None = None
    dtype: torch.dtype | None = None  # weights' dtype (default float32)

    def stock_tagger(self) -> nn.Module:
        """transformers' token classifier, with transformers' own attention choice."""
        if self.path is not None:
            return AutoModelForTokenClassification.from_pretrained(self.path, num_labels=LABELS, dtype=self.dtype)
        config = copy.deepcopy(self.config)
        config.num_labels = LABELS
        return AutoModelForTokenClassification.from_config(config, dtype=self.dtype)

    def encoder(self, attention: str = "sdpa") -> nn.Module:
        """The bare encoder, in SDPA (transformers' or ours) or eager attention."""
        ours = attention == "sdpa" and self.config.model_type in SDPA_SELF_ATTENTION
        implementation = "eager" if ours else attention
        if self.path is not None:
            model = AutoModel.from_pretrained(self.path, attn_implementation=implementation, dtype=self.dtype)
        else:
            config = copy.deepcopy(self.config)  # from_config writes the attention choice into the config it gets
            model = AutoModel.from_config(config, attn_implementation=implementation, dtype=self.dtype)
        return use_sdpa_attention(model) if ours else model


class PromptTagger(nn.Module):
    """A frozen encoder with ``questions`` soft-prompt blocks (row ``i`` asks block ``i % questions``) and a linear
    token classifier."""

    def __init__(self, backbone: nn.Module, depth: str, prompt_tokens: int, questions: int = 1,
                 start_layer: int = 0) -> None:
        super().__init__()
        config = ClinicalPromptConfig(num_virtual_tokens=prompt_tokens, depth=depth, prompt_start_layer=start_layer,
                                      prompt_blocks=[f"question{i}" for i in range(questions)])
        head = nn.Linear(backbone.config.hidden_size, LABELS, device=backbone.get_input_embeddings().weight.device)
        self.encoder = PromptedEncoder(backbone.requires_grad_(False), config, head)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> dict[str, Tensor]:
        blocks = torch.arange(len(input_ids), device=input_ids.device) % self.encoder.config.num_blocks
        logits = self.encoder.heads(self.encoder(input_ids, attention_mask, block_ids=blocks))
        return {"loss": nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())}


def build(method: str, base: Base, prompt_tokens: int, questions: int = 1) -> nn.Module:
    """The model of ``method`` on ``base``; its ``forward(**batch)`` returns a dict with the loss."""
    if method == "full-fine-tuning":
        return StockTagger(base.stock_tagger())
    if method == "peft-prompt-tuning":
        from peft import PromptTuningConfig, TaskType, get_peft_model

        peft_config = PromptTuningConfig(task_type=TaskType.TOKEN_CLS, num_virtual_tokens=prompt_tokens)
        return StockTagger(get_peft_model(base.stock_tagger(), peft_config), virtual_tokens=prompt_tokens)
    depth = "input" if method == "ours-input" else "deep"
    backbone = base.encoder("eager" if method == "ours-deep-eager" else "sdpa")
    if method.endswith("-4bit") or method.endswith("-8bit"):
        quantize_backbone(backbone, method.rsplit("-", 1)[1])
    if method == "ours-deep-checkpointing":
        enable_activation_checkpointing(backbone)
    start_layer = round(LATE.get(method, 0) * base.config.num_hidden_layers)
    return PromptTagger(backbone, depth, prompt_tokens, questions, start_layer)


def random_batch(base: Base, batch: int, text_length: int, device: torch.device, questions: int = 1
                 ) -> dict[str, Tensor]:
    """``batch`` rows: ``batch / questions`` random texts, each repeated ``questions`` times in a row."""
    generator = torch.Generator().manual_seed(0)
    texts = torch.randint(1000, base.config.vocab_size, (batch // questions, text_length), generator=generator)
    input_ids = texts.repeat_interleave(questions, dim=0)
    labels = torch.randint(0, LABELS, (batch, text_length), generator=generator)
    return {"input_ids": input_ids.to(device), "attention_mask": torch.ones_like(input_ids, device=device),
            "labels": labels.to(device)}


def timed_steps(
    model: nn.Module, batch: dict[str, Tensor], steps: int, warmup: int, autocast: torch.dtype | None = None
) -> float:
    """Seconds per optimizer step (forward, backward, AdamW on the trainable parameters)."""
    device = batch["input_ids"].device
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    started = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            _synchronize(device)
            started = time.perf_counter()
        with torch.autocast(device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            loss = model(**batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _synchronize(device)
    return (time.perf_counter() - started) / steps


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cpu_run(base: Base, method: str, args: argparse.Namespace, connection) -> None:
    """One method in a forked process: its tokens/s and memory, sent back through ``connection``."""
    torch.manual_seed(0)
    model = build(method, base, args.prompt_tokens, args.questions)
    batch = random_batch(base, args.batch, args.length - args.prompt_tokens, torch.device("cpu"), args.questions)
    built = _resident_bytes()
    seconds = timed_steps(model, batch, args.steps, warmup=1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    connection.send({
        "base": base.name, "method": method, "trainable": trainable_parameters(model),
        "tokens_per_s": batch["input_ids"].numel() / seconds, "peak_mib": peak / 2**20,
        "train_mib": (peak - built) / 2**20,
    })


def _fit_run(start_layer: int, args: argparse.Namespace, connection) -> None:
    """The quickstart's extractor with prompts from ``start_layer``, trained one epoch by ``fit`` on the first
    ``--fit-documents`` bundled notes: fit's own tokens/s (attended tokens of every row over the loop's time)."""
    torch.manual_seed(0)
    config = QuickstartConfig(prompt_start_layer=start_layer)
    schema = load_schema(config.schema)
    result = fit_one_epoch(quickstart_extractor(config, schema), bundled_notes(config, schema)[: args.fit_documents],
                           config)
    connection.send({"start_layer": start_layer, "tokens_per_s": result.tokens_per_second,
                     "seconds": result.train_seconds,
                     "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10})


def run_forked(label: str, target: Callable, *args: object) -> dict:
    """``target(*args, connection)`` in a forked process; what it sends back."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=target, args=(*args, sender))
    process.start()
    sender.close()
    try:
        return receiver.recv()
    except EOFError:
        process.join()
        raise RuntimeError(f"{label}: the benchmark process died (exit code {process.exitcode})") from None
    finally:
        process.join()


def print_table(rows: list[dict], memory: tuple[str, ...] = ("peak_mib", "train_mib"), note: str = "") -> None:
    """Rows grouped by base; ratios against ``peft-prompt-tuning`` and ``full-fine-tuning`` of the same base, for
    tokens/s and for the last of the ``memory`` columns."""
    labels = {"peak_mib": "peak MiB", "train_mib": "train MiB"}
    header = (f"{'base':<16} {'method':<26} {'trainable':>11} {'tokens/s':>10} {'x PEFT':>7} {'x full':>7} "
              + " ".join(f"{labels[key]:>9}" for key in memory) + f" {'x PEFT':>7} {'x full':>7}")
    print(header + "\n" + "-" * len(header))
    for row in rows:
        peers = {r["method"]: r for r in rows if r["base"] == row["base"] and "tokens_per_s" in r}
        if "tokens_per_s" not in row:
            print(f"{row['base']:<16} {row['method']:<26} {row.get('error', '-')}")
            continue

        def ratio(key: str, peer: str, row: dict = row, peers: dict = peers) -> str:
            value, peer_value = row[key], peers[peer][key] if peer in peers else None
            return f"{value / peer_value:.2f}" if value is not None and peer_value else "-"

        print(f"{row['base']:<16} {row['method']:<26} {row['trainable']:>11,} {row['tokens_per_s']:>10,.0f} "
              f"{ratio('tokens_per_s', 'peft-prompt-tuning'):>7} {ratio('tokens_per_s', 'full-fine-tuning'):>7} "
              + " ".join(f"{row[key]:>9,.0f}" if row[key] is not None else f"{'-':>9}" for key in memory)
              + f" {ratio(memory[-1], 'peft-prompt-tuning'):>7} {ratio(memory[-1], 'full-fine-tuning'):>7}")
    if note:
        print(note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128, help="positions: prompt tokens + text tokens")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4, help="timed steps after one warm-up step")
    parser.add_argument("--questions", type=int, default=1, help="questions (prompt blocks) asked about each text")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--fit-documents", type=int, default=0,
                        help="also train the quickstart's extractor one epoch on this many notes, prompts from layer "
                             "0 and from L/2 (0: skip)")
    args = parser.parse_args()
    if args.batch % args.questions:
        parser.error("--batch must be a multiple of --questions")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # PEFT calls a deprecated transformers property
    minilm = resolve_backbone("minilm")
    bases = [Base("minilm", AutoConfig.from_pretrained(minilm), minilm),
             Base("gatortron-small", AutoConfig.for_model(**SMALL_GATORTRON))]
    rows = []
    for base in bases:
        for method in args.methods:
            rows.append(run_forked(f"{base.name} / {method}", _cpu_run, base, method, args))
            print(f"  {base.name} / {method}: {rows[-1]['tokens_per_s']:,.0f} tokens/s", flush=True)
    if args.fit_documents:
        layers = bases[0].config.num_hidden_layers
        fitted = [run_forked(f"fit from layer {k}", _fit_run, k, args) for k in (0, layers // 2)]
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print_table(rows, note=(
        f"CPU, {torch.get_num_threads()} threads (OMP_NUM_THREADS={threads}), float32; batch {args.batch}, "
        f"{args.length - args.prompt_tokens} text tokens + {args.prompt_tokens} prompt tokens, {args.questions} "
        f"question(s) per text, {args.steps} timed "
        "steps. train MiB: resident memory above the built model (activations, gradients, optimizer state)."
    ))
    if args.fit_documents:
        print_fit_table(fitted, args.fit_documents)


def print_fit_table(rows: list[dict], documents: int) -> None:
    """The ``fit`` rows: tokens/s and its ratio to prompts in every layer (start layer 0)."""
    header = f"{'fit, prompts from layer':<24} {'tokens/s':>10} {'x layer 0':>9} {'seconds':>8} {'peak MiB':>9}"
    print("\n" + header + "\n" + "-" * len(header))
    for row in rows:
        speedup = row["tokens_per_s"] / rows[0]["tokens_per_s"]
        print(f"{row['start_layer']:<24} {row['tokens_per_s']:>10,.0f} {speedup:>9.2f} {row['seconds']:>8.0f} "
              f"{row['peak_mib']:>9,.0f}")
    print(f"The quickstart's extractor (MiniLM, frozen, {QuickstartConfig().max_length}-token windows, every concept "
          f"and relation question) trained one epoch by fit on the first {documents} bundled notes.")


if __name__ == "__main__":
    main()
