"""Training speed and memory on one GPU at the GatorTron shapes: random weights, bf16, 512 positions.

    python benchmarks/gpu_training_speed.py --output gpu_training_speed.json

The methods of ``training_speed.py`` (stock full fine-tuning and stock PEFT prompt tuning against our frozen input
and deep prompts), plus ``ours-deep-eager`` (our deep prompts in Megatron-BERT's stock eager attention: the share of
the gain that SDPA brings) and ``ours-deep-4bit`` (the backbone in bitsandbytes NF4) for the sizes in
``--quantized``, and ``ours-late-1/3``, ``-1/2``, ``-2/3`` (prompts from layer L/3, L/2, 2L/3; every method trains
on batches of texts each asked ``--questions`` questions, whose lower layers late prompts share). Shapes from
``benchmarks/configs/gatortron-{345m,3.9b,8.9b}.json`` (UFNLP's public configs) at batch 32 / 8 / 4. Every model
holds its weights in bfloat16 (AdamW states follow: bfloat16 for full fine-tuning, float32 for prompt tables and
heads) and runs under bfloat16 autocast; 496 text tokens per row (+16 prompt tokens for the prompt methods: 512
positions), no padding. Tokens/s counts text tokens over ``--steps`` optimizer steps after ``--warmup``; memory is
``torch.cuda.max_memory_allocated`` over those steps (weights included). A method that runs out of memory is
reported as such. Sized to finish in under 5 minutes on one H100/H200 with the defaults (``--sizes`` and
``--methods`` run a part).
"""
from __future__ import annotations

import argparse
import gc
import platform
import time
import warnings
from pathlib import Path

import peft
import torch
import transformers
from training_speed import LATE, Base, build, print_table, random_batch, timed_steps, trainable_parameters
from transformers import AutoConfig

from clinical_prompt.atomic import write_json

CONFIGS = Path(__file__).resolve().parent / "configs"
BATCH = {"345m": 32, "3.9b": 8, "8.9b": 4}
METHODS = ("full-fine-tuning", "peft-prompt-tuning", "ours-input", "ours-deep", "ours-deep-eager",
           "ours-deep-checkpointing", *LATE)


def run(base: Base, method: str, batch_size: int, args: argparse.Namespace, device: torch.device) -> dict:
    """Build ``method`` on ``device``, time its training steps, free it again."""
    gc.collect()
    cuda = device.type == "cuda"  # other devices: a smoke test of the script, without memory figures
    if cuda:
        torch.cuda.empty_cache()
    torch.manual_seed(0)
    row = {"base": base.name, "method": method, "batch": batch_size}
    model = None
    try:
        started = time.perf_counter()
        with device:
            model = build(method, base, args.prompt_tokens, args.questions)
        row["build_s"] = time.perf_counter() - started
        batch = random_batch(base, batch_size, args.length - args.prompt_tokens, device, args.questions)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        seconds = timed_steps(model, batch, args.steps, args.warmup, autocast=torch.bfloat16)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
        row.update(trainable=trainable_parameters(model), tokens_per_s=batch["input_ids"].numel() / seconds,
                   step_s=seconds, peak_mib=peak)
    except torch.cuda.OutOfMemoryError:
        row["error"] = "out of memory"
    finally:
        del model
    print(f"  {base.name} / {method}: " + (f"{row['tokens_per_s']:,.0f} tokens/s, {row['peak_mib'] or 0:,.0f} MiB"
                                           if "tokens_per_s" in row else row["error"]), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(BATCH), help="configs/gatortron-{size}.json to run")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--quantized", nargs="*", default=["8.9b"], help="sizes that also run ours-deep-4bit")
    parser.add_argument("--batch", type=int, help="batch size for every size (default: 32 / 8 / 4)")
    parser.add_argument("--length", type=int, default=512, help="positions: prompt tokens + text tokens")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--questions", type=int, default=4,
                        help="questions (prompt blocks) asked about each text: rows that late prompts share")
    parser.add_argument("--config-dir", type=Path, default=CONFIGS)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--output", type=Path, help="write the settings and rows as JSON")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # PEFT calls a deprecated transformers property
    device = torch.device(args.device)
    rows = []
    for size in args.sizes:
        config = AutoConfig.from_pretrained(args.config_dir / f"gatortron-{size}.json")
        base = Base(f"gatortron-{size}", config, dtype=torch.bfloat16)
        methods = list(args.methods) + (["ours-deep-4bit"] if size in args.quantized else [])
        for method in methods:
            rows.append(run(base, method, args.batch or BATCH.get(size, 4), args, device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print_table(rows, memory=("peak_mib",), note=(
        f"{name}; bf16 weights under bf16 autocast; {args.length - args.prompt_tokens} text tokens "
        f"(+{args.prompt_tokens} prompt tokens); {args.questions} questions per text; {args.steps} timed steps after "
        f"{args.warmup}."
    ))
    if args.output:
        versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
        write_json(args.output, {"device": name, "versions": versions, "settings": vars(args) | {
            "config_dir": str(args.config_dir), "output": str(args.output)}, "rows": rows})


if __name__ == "__main__":
    main()
