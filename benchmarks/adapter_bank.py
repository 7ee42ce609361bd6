"""AdapterBank: memory per adapter, and documents/s of mixed batches against one forward pass per adapter.

Adapters are random-initialized ``soft-prompt-frozen`` extractors of mixed depth (input-layer / deep), prompt length
and schema, saved with ``save_pretrained`` and loaded into the bank as a deployment would.

    OMP_NUM_THREADS=1 python benchmarks/adapter_bank.py memory [--adapters 16]
    OMP_NUM_THREADS=1 python benchmarks/adapter_bank.py speed --adapters 1 4 16 64 --documents 64 --characters 300
    OMP_NUM_THREADS=1 python benchmarks/adapter_bank.py speed --adapters 16 --deep-from 0 0.5   # shared trunk's gain
    python benchmarks/adapter_bank.py speed --device cuda --shape gatortron-345m --dtype bfloat16 \\
        --max-length 512 --batch-size 32 --json gatortron-345m.json

``memory``: resident memory (Linux ``/proc/self/statm``) after loading the base and after each adapter, against the
adapter folder's size and against loading one more adapter with its own copy of the base.

``speed``: for each adapter count, the same documents (document ``i`` to adapter ``i mod count``) extracted by
``AdapterBank.extract`` (rows of every adapter mixed in each forward pass) and by each adapter's own ``extract`` in
turn (the PEFT ``set_adapter`` way: rows grouped by adapter, switch, run), on the same loaded base; best of
``--repeats`` alternating runs, timed by the process's CPU time on the CPU (run it with one torch thread) and by wall
time on a GPU. Documents/s differ between adapter counts because the adapters' schemas ask different numbers of
questions; compare the two columns of a line. A ``--shape`` other than ``minilm`` is a random-weight base from
``benchmarks/configs/<shape>.json`` (rows are built with the MiniLM tokenizer, whose ids fit those vocabularies);
deep adapters grow with layers x hidden size (about 0.4 GB in float32 for 3.9B at 32 tokens), so give the 3.9B and
8.9B shapes ``--adapters 1 4 16``. ``--deep-from S [S ...]`` makes every adapter deep, prompts from layer
``round(S x L)`` (late prompts for S > 0: the bank runs the layers below once per text for all adapters), and runs the
speed table once per S. Span heads use ``--threshold`` 0.9: random heads then predict few spans, so the
time is the concept questions'.
"""
from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: no progress bars between the table's lines

import torch
from transformers import AutoConfig, AutoModel

from clinical_prompt import AdapterBank, load_adapter
from clinical_prompt.backbone import load_backbone, load_tokenizer
from clinical_prompt.brat import Document, read_corpus
from clinical_prompt.extractors import MrcExtractor, MrcSettings
from clinical_prompt.extractors.mrc import mrc_prompt_config
from clinical_prompt.heads.span import SpanHead
from clinical_prompt.prompts import ClinicalPromptConfig, PromptedEncoder
from clinical_prompt.quickstart import BUNDLED_CORPUS
from clinical_prompt.schema import TaskSchema, load_schema

CONFIGS = Path(__file__).resolve().parent / "configs"
SCHEMAS = [
    load_schema("maccrobat-med"),
    TaskSchema.from_dict({
        "name": "meds",
        "concepts": [{"name": "Drug", "query": "Find the drugs."}, {"name": "Dosage", "query": "Find the doses."}],
        "relations": [{"name": "Dosage-Drug", "head": "Drug", "tails": ["Dosage"], "query": "Dose of {head}?",
                       "head_arg": "Arg2"}],
    }),
    TaskSchema.from_dict({
        "name": "problems",
        "concepts": [{"name": "SignSymptom", "query": "Find the symptoms."},
                     {"name": "Disease", "query": "Find the diseases."}],
    }),
]
SHAPES = [("deep", 16), ("input", 8), ("deep", 4), ("input", 32), ("deep", 32), ("input", 16)]  # (depth, tokens)


def load_base(shape: str, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """MiniLM (pretrained) or a random-weight encoder of ``configs/<shape>.json``, in eval mode on ``device``."""
    if shape == "minilm":
        return load_backbone("minilm").to(device, dtype).eval()
    config = AutoConfig.from_pretrained(CONFIGS / f"{shape}.json")
    with torch.device(device):
        model = AutoModel.from_config(config, dtype=dtype, add_pooling_layer=False)
    return model.eval()


def save_adapters(
    base: torch.nn.Module, tokenizer, count: int, directory: Path, args: argparse.Namespace,
    deep_from: float | None = None,
) -> list[Path]:
    """``count`` random adapters on ``base`` (schemas and prompt shapes cycled), each saved in its own folder; with
    ``deep_from`` every adapter is deep, its prompts from layer ``round(deep_from x L)``."""
    paths = []
    for index in range(count):
        torch.manual_seed(index)
        schema = SCHEMAS[index % len(SCHEMAS)]
        depth, tokens = SHAPES[index % len(SHAPES)]
        start = 0 if deep_from is None else round(deep_from * base.config.num_hidden_layers)
        shape = ClinicalPromptConfig(num_virtual_tokens=tokens, depth="deep" if deep_from is not None else depth,
                                     prompt_start_layer=start)
        prompts = mrc_prompt_config(schema, shape)
        settings = MrcSettings(max_length=args.max_length, threshold=args.threshold)
        head = SpanHead(base.config.hidden_size, settings.head_dropout, max_span_len=settings.max_span_len)
        encoder = PromptedEncoder(base, prompts, head).to(next(base.parameters()).device)
        extractor = MrcExtractor(schema, tokenizer, encoder, strategy="soft-prompt-frozen", settings=settings)
        paths.append(directory / f"adapter-{index}")
        extractor.save_pretrained(paths[-1])
    return paths


def resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def folder_mib(path: Path) -> float:
    return sum(file.stat().st_size for file in path.iterdir()) / 2**20


def _save_adapters_alone(args: argparse.Namespace, directory: Path) -> None:
    base = load_base(args.shape, "cpu", torch.float32)
    save_adapters(base, load_tokenizer("minilm"), args.adapters, directory, args)


def resident_base(shape: str) -> torch.nn.Module:
    """The base with every weight read (loading may map the weight file and read pages only on first use)."""
    base = load_base(shape, "cpu", torch.float32)
    with torch.no_grad():
        sum(float(p.sum()) for p in base.parameters())
    return base


def memory(args: argparse.Namespace) -> dict:
    tokenizer = load_tokenizer("minilm")
    with tempfile.TemporaryDirectory() as scratch:
        # adapters are made in another process, so that memory it frees is not reused here
        maker = multiprocessing.get_context("spawn").Process(target=_save_adapters_alone, args=(args, Path(scratch)))
        maker.start()
        maker.join()
        paths = [Path(scratch) / f"adapter-{index}" for index in range(args.adapters)]
        gc.collect()
        before = resident_mib()
        bank = AdapterBank(resident_base(args.shape), tokenizer=tokenizer)
        base_mib = sum(p.numel() * p.element_size() for p in bank.backbone.parameters()) / 2**20
        gc.collect()
        rows = [{"adapters": 0, "resident_mib": resident_mib(), "file_mib": 0.0}]
        loaded = rows[0]["resident_mib"] - before
        print(f"base {args.shape}: parameters {base_mib:.1f} MiB; resident memory +{loaded:.1f} MiB for loading it")
        print(f"{'adapters':>8} {'resident MiB':>13} {'growth MiB':>11} {'adapter files MiB':>18}")
        for index, path in enumerate(paths, start=1):
            bank.add(f"adapter-{index}", path)
            gc.collect()
            rows.append({"adapters": index, "resident_mib": resident_mib(), "file_mib": folder_mib(path)})
            growth = rows[-1]["resident_mib"] - rows[-2]["resident_mib"]
            print(f"{index:>8} {rows[-1]['resident_mib']:>13.1f} {growth:>11.2f} {rows[-1]['file_mib']:>18.2f}")
        total_growth = rows[-1]["resident_mib"] - rows[0]["resident_mib"]
        total_files = sum(row["file_mib"] for row in rows)
        start = resident_mib()
        stock = load_adapter(resident_base(args.shape), paths[0], tokenizer=tokenizer)
        gc.collect()
        stock_growth = resident_mib() - start
        del stock
    print(f"{args.adapters} adapters in the bank: resident memory +{total_growth:.1f} MiB for {total_files:.1f} MiB of "
          f"adapter folders ({total_growth / total_files:.2f}x); one more adapter with its own copy of the base: "
          f"+{stock_growth:.1f} MiB")
    return {"command": "memory", "shape": args.shape, "base_parameters_mib": base_mib, "rows": rows,
            "bank_growth_mib": total_growth, "adapter_files_mib": total_files, "own_base_one_adapter_mib": stock_growth}


def documents(count: int, characters: int | None) -> list[Document]:
    """The first ``count`` MACCROBAT notes by name, without their annotations, cut to ``characters`` (at a space)."""
    corpus = sorted(read_corpus(BUNDLED_CORPUS, collect_problems=True).documents, key=lambda d: d.doc_id)
    if count > len(corpus):
        raise SystemExit(f"--documents {count}: the bundled corpus holds {len(corpus)}")

    def cut(text: str) -> str:
        return text if characters is None or len(text) <= characters else text[: text.rfind(" ", 0, characters)]

    return [Document(doc.doc_id, cut(doc.text)) for doc in corpus[:count]]


def per_adapter(bank: AdapterBank, docs: list[Document], names: list[str], batch_size: int) -> None:
    """One adapter at a time over its own documents (rows grouped by adapter, switch, run)."""
    for name in dict.fromkeys(names):
        bank[name].extract([doc for doc, other in zip(docs, names) if other == name], batch_size=batch_size)


def timed(run, device: str) -> float:
    """Seconds ``run()`` takes: wall time on a GPU; on the CPU, this process's CPU time (with one torch thread, the
    wall time of an idle machine, and unaffected by other processes sharing the cores)."""
    if device == "cpu":
        start = time.process_time()
        run()
        return time.process_time() - start
    torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def speed(args: argparse.Namespace) -> dict:
    dtype = getattr(torch, args.dtype)
    tokenizer = load_tokenizer("minilm")
    base = load_base(args.shape, args.device, dtype)
    docs = documents(args.documents, args.characters)
    results = []
    print(f"{args.shape} on {args.device} ({args.dtype}), {len(docs)} documents of {args.characters or 'all'} "
          f"characters, {args.max_length} tokens per row, "
          f"batches of {args.batch_size} rows, torch threads {torch.get_num_threads()}")
    clock = "CPU" if args.device == "cpu" else "wall"
    print(f"documents per {clock} second, best of {args.repeats}")
    for deep_from in args.deep_from or [None]:
        if deep_from is not None:
            print(f"every adapter deep, prompts from layer {round(deep_from * base.config.num_hidden_layers)}")
        results += speed_table(args, base, tokenizer, docs, deep_from)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    return {"command": "speed", "shape": args.shape, "device": args.device, "device_name": device_name,
            "dtype": args.dtype, "documents": len(docs), "characters": args.characters, "max_length": args.max_length,
            "batch_size": args.batch_size,
            "threshold": args.threshold, "torch_threads": torch.get_num_threads(), "clock": clock, "results": results}


def speed_table(args: argparse.Namespace, base: torch.nn.Module, tokenizer, docs: list[Document],
                deep_from: float | None) -> list[dict]:
    """Mixed against per-adapter documents/s for each adapter count, printed and returned."""
    results = []
    print(f"{'adapters':>8} {'mixed docs/s':>13} {'per-adapter docs/s':>19} {'mixed / per-adapter':>20}")
    with tempfile.TemporaryDirectory() as scratch:
        paths = save_adapters(base, tokenizer, max(args.adapters), Path(scratch), args, deep_from)
        bank = AdapterBank(base, tokenizer=tokenizer)
        for index, path in enumerate(paths):
            bank.add(f"adapter-{index}", path)
        bank.extract(docs[:2], "adapter-0", batch_size=args.batch_size)  # warm-up
        for count in args.adapters:
            names = [f"adapter-{i % count}" for i in range(len(docs))]
            mixed, single = [], []
            for _ in range(args.repeats):
                mixed.append(timed(lambda names=names: bank.extract(docs, names, batch_size=args.batch_size),
                                   args.device))
                single.append(timed(lambda names=names: per_adapter(bank, docs, names, args.batch_size), args.device))
            row = {"adapters": count, "deep_from": deep_from, "mixed_docs_per_s": len(docs) / min(mixed),
                   "per_adapter_docs_per_s": len(docs) / min(single)}
            row["ratio"] = row["mixed_docs_per_s"] / row["per_adapter_docs_per_s"]
            results.append(row)
            print(f"{count:>8} {row['mixed_docs_per_s']:>13.2f} {row['per_adapter_docs_per_s']:>19.2f} "
                  f"{row['ratio']:>19.2f}x")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["memory", "speed"])
    parser.add_argument("--shape", default="minilm", help="minilm, or a config name in benchmarks/configs/")
    parser.add_argument("--adapters", type=int, nargs="+", help="memory: one count (16); speed: counts (1 4 16 64)")
    parser.add_argument("--documents", type=int, default=64)
    parser.add_argument("--characters", type=int, help="cut each document to about this many characters")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--deep-from", type=float, nargs="+",
                        help="speed: every adapter deep, prompts from this share of the layers (0: full depth)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.command == "memory":
        args.adapters = (args.adapters or [16])[0]
        result = memory(args)
    else:
        args.adapters = args.adapters or [1, 4, 16, 64]
        result = speed(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
