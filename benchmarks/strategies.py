"""The four strategies on one corpus: train, extract the test split end to end, score it the n2c2 way.

One strategy per process (peak memory is the process's), one JSON line per run appended to ``--results``:

    python benchmarks/strategies.py run --corpus ddi --strategy soft-prompt-frozen --epochs 3 --results runs.jsonl
    python benchmarks/strategies.py table --results runs.jsonl

Corpora are read from ``../shared/data`` (the bundled MACCROBAT copy for ``maccrobat``). Splits:
``ddi`` Train/DrugBank -> Test/DrugBank; ``maccrobat`` the first 150 documents by sorted name -> the last 50;
``sdoh`` train -> test. The dev set (early stopping, best epoch) is a seeded 10% of the training documents.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from clinical_prompt.brat import Document
from clinical_prompt.corpus import load_split as load_corpus_split
from clinical_prompt.corpus import sample_documents, train_dev_split
from clinical_prompt.evaluation import evaluate_documents
from clinical_prompt.extractors import STRATEGIES, build_extractor
from clinical_prompt.fit import fit
from clinical_prompt.schema import TaskSchema, load_schema
from clinical_prompt.training import TrainingConfig

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CORPORA = {
    # name: (schema, train folder, test folder); a None test folder holds out the last 50 documents by sorted name
    "ddi": ("ddi", SHARED_DATA / "ddi-corpus-2013-brat" / "Train", SHARED_DATA / "ddi-corpus-2013-brat" / "Test"),
    "maccrobat": ("maccrobat-med", "bundled:maccrobat2020", None),
    "sdoh": ("sdoh-mtsamples", SHARED_DATA / "social-history-mtsamples" / "train",
             SHARED_DATA / "social-history-mtsamples" / "test"),
}


def corpus_schema(corpus: str, concepts_only: bool = False) -> TaskSchema:
    """The schema of ``corpus``; with ``concepts_only``, without its relation types."""
    schema = load_schema(CORPORA[corpus][0])
    if not concepts_only:
        return schema
    return dataclasses.replace(schema, relations=(), mapping=dataclasses.replace(schema.mapping, relations={}))


def load_split(corpus: str, schema: TaskSchema) -> tuple[list[Document], list[Document]]:
    """(train, test) documents of ``corpus`` mapped to ``schema``."""
    _, train_dir, test_dir = CORPORA[corpus]
    return load_corpus_split(schema, train_dir, test_dir, test_documents=None if test_dir else 50)


def run_name(args: argparse.Namespace) -> str:
    """The run's folder name under ``--work-dir``: corpus, strategy, training size and concepts-only flag."""
    return "-".join([args.corpus, args.strategy, f"train{args.train_docs or 'all'}", *(["concepts"] * args.concepts_only)])


def run(args: argparse.Namespace) -> dict:
    """Train one strategy and score it on the test split; returns the result row."""
    torch.manual_seed(args.seed)
    schema = corpus_schema(args.corpus, args.concepts_only)
    train_docs, test_docs = load_split(args.corpus, schema)
    if args.test_docs:
        test_docs = sorted(test_docs, key=lambda d: d.doc_id)[: args.test_docs]
    if args.train_docs:
        train_docs = sample_documents(train_docs, args.train_docs, seed=args.seed)
    train_docs, dev_docs = train_dev_split(train_docs, dev_fraction=0.1, seed=args.seed)
    options = {} if args.negative_ratio is None else {"negative_ratio": args.negative_ratio}
    extractor = build_extractor(
        args.strategy, schema, args.backbone, max_length=args.max_length, **options
    )
    config = TrainingConfig(
        output_dir=str(Path(args.work_dir) / run_name(args)),
        num_epochs=args.epochs,
        per_device_batch_size=args.batch_size,
        seed=args.seed,
        early_stopping_patience=2,
    )
    result = fit(extractor, train_docs, dev_docs, config, learning_rates=dict(args.learning_rate))
    started = time.perf_counter()
    predictions = extractor.extract(test_docs)
    extract_seconds = time.perf_counter() - started
    scores = evaluate_documents({d.doc_id: d for d in test_docs}, {d.doc_id: d for d in predictions})
    trainable = sum(p.numel() for p in extractor.parameters() if p.requires_grad)
    return {
        "corpus": args.corpus,
        "strategy": args.strategy,
        "concepts_only": args.concepts_only,
        "learning_rates": dict(args.learning_rate),
        "backbone": args.backbone,
        "train_docs": len(train_docs),
        "dev_docs": len(dev_docs),
        "test_docs": len(test_docs),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "matching": scores["matching"],
        "concept_strict_f1": scores["concepts"]["strict"]["micro"]["f1"],
        "concept_lenient_f1": scores["concepts"]["lenient"]["micro"]["f1"],
        "relation_strict_f1": scores["relations"]["strict"]["micro"]["f1"],
        "relation_lenient_f1": scores["relations"]["lenient"]["micro"]["f1"],
        "trainable_parameters": trainable,
        "train_seconds": round(result.train_seconds, 1),
        "extract_seconds": round(extract_seconds, 1),
        "peak_memory_mib": round(result.peak_memory_bytes / 2**20),
        "tokens_per_second": result.tokens_per_second,
    }


def table(results: Path) -> str:
    """A markdown table of the result rows in ``results``."""
    rows = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines = [
        "| corpus | strategy | train / test docs | epochs | concept strict F1 | concept lenient F1 "
        "| relation strict F1 | trainable params | train s | extract s | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        relation = "n/a" if r.get("concepts_only") else f"{r['relation_strict_f1']:.3f}"
        lines.append(
            f"| {r['corpus']} | {r['strategy']} | {r['train_docs']} / {r['test_docs']} | {r['epochs_run']} "
            f"| {r['concept_strict_f1']:.3f} | {r['concept_lenient_f1']:.3f} | {relation} "
            f"| {r['trainable_parameters']:,} | {r['train_seconds']:.0f} | {r['extract_seconds']:.0f} "
            f"| {r['peak_memory_mib']} |"
        )
    return "\n".join(lines)


def rate(text: str) -> tuple[str, float]:
    """``PART=RATE`` as ``(part, rate)``."""
    part, _, value = text.partition("=")
    try:
        return part, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PART=RATE, e.g. backbone=5e-5; got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run")
    run_parser.add_argument("--corpus", choices=sorted(CORPORA), required=True)
    run_parser.add_argument("--strategy", choices=sorted(STRATEGIES), required=True)
    run_parser.add_argument("--backbone", default="minilm")
    run_parser.add_argument("--epochs", type=int, default=3)
    run_parser.add_argument("--batch-size", type=int, default=8)
    run_parser.add_argument("--max-length", type=int, default=256)
    run_parser.add_argument("--train-docs", type=int, help="sample this many training documents (seeded)")
    run_parser.add_argument("--negative-ratio", type=float, help="rows without an answer kept per row with one (MRC: concept and relation rows; finetune: entity pairs)")
    run_parser.add_argument("--test-docs", type=int, help="score only the first this many test documents by name")
    run_parser.add_argument("--concepts-only", action="store_true", help="leave the relation types out (schema and data)")
    run_parser.add_argument("--learning-rate", type=rate, action="append", default=[], metavar="PART=RATE",
                            help="replace a default rate of the strategy: backbone, head or prompt (repeatable)")
    run_parser.add_argument("--seed", type=int, default=42)
    run_parser.add_argument("--work-dir", default="benchmark-runs")
    run_parser.add_argument("--results", type=Path, required=True)
    table_parser = commands.add_parser("table")
    table_parser.add_argument("--results", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "table":
        print(table(args.results))
        return 0
    row = run(args)
    print(json.dumps(row))
    with args.results.open("a", encoding="utf-8") as stream:
        stream.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
