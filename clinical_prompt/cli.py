"""The ``clinical-prompt`` command line."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _corpus_stats(args: argparse.Namespace) -> int:
    from clinical_prompt.corpus.stats import run_corpus_stats

    return run_corpus_stats(args.directory, args.schema)


def _corpus_align(args: argparse.Namespace) -> int:
    from clinical_prompt.corpus.stats import run_alignment_check

    return run_alignment_check(args.directory, args.schema, args.tokenizer, args.max_length)


def _evaluate(args: argparse.Namespace) -> int:
    from clinical_prompt.evaluation.n2c2 import run_evaluate

    return run_evaluate(args.gold, args.pred, args.schema, args.json)


def _adapter_size(args: argparse.Namespace) -> int:
    from transformers import AutoConfig

    from clinical_prompt.backbone import resolve_backbone
    from clinical_prompt.prompts.report import format_size_table

    blocks = [f"block{i}" for i in range(args.blocks)]
    print(f"{args.backbone}: {args.blocks} prompt blocks x {args.tokens} virtual tokens, float32, prompts only")
    print(format_size_table(AutoConfig.from_pretrained(resolve_backbone(args.backbone)), blocks, args.tokens))
    return 0


def _card(args: argparse.Namespace) -> int:
    from clinical_prompt.card import write_card

    print(f"wrote {write_card(args.directory, metrics=args.metrics, license=args.license)}")
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from clinical_prompt.quickstart import quickstart_config, run_quickstart

    return run_quickstart(quickstart_config(
        args.output_dir, corpus=args.corpus, schema=args.schema, backbone=args.backbone, epochs=args.epochs,
        train_documents=args.train_documents, test_documents=args.test_documents,
    ))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="clinical-prompt", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    corpus = commands.add_parser("corpus", help="inspect a BRAT corpus").add_subparsers(dest="corpus_command", required=True)
    stats = corpus.add_parser("stats", help="documents, sentences, concepts and relations per type, and every problem found")
    stats.add_argument("directory")
    stats.add_argument("--schema", help="built-in schema name or YAML file; adds the counts after mapping onto it")
    stats.set_defaults(run=_corpus_stats)
    align = corpus.add_parser("align", help="gold spans -> token labels -> spans: the fraction recovered per type")
    align.add_argument("directory")
    align.add_argument("--schema", required=True, help="built-in schema name or YAML file")
    align.add_argument("--tokenizer", help="tokenizer path or hub id (default: the bundled MiniLM)")
    align.add_argument("--max-length", type=int, default=512)
    align.set_defaults(run=_corpus_align)

    evaluate = commands.add_parser("evaluate", help="n2c2 strict and lenient micro-F1 of BRAT predictions")
    evaluate.add_argument("--gold", required=True, help="directory of gold BRAT files")
    evaluate.add_argument("--pred", required=True, help="directory of predicted BRAT files")
    evaluate.add_argument("--schema", help="map both sides onto this schema first")
    evaluate.add_argument("--json", help="also write the scores to this JSON file")
    evaluate.set_defaults(run=_evaluate)

    size = commands.add_parser("adapter-size", help="trainable parameters and adapter bytes of every prompt shape")
    size.add_argument("--backbone", default="minilm", help="model folder, config.json's folder or hub id")
    size.add_argument("--blocks", type=int, default=9, help="prompt blocks (one per concept and relation type)")
    size.add_argument("--tokens", type=int, default=16, help="virtual tokens per block")
    size.set_defaults(run=_adapter_size)

    card = commands.add_parser("card", help="render an adapter's model card (README.md) from its files")
    card.add_argument("directory", help="a directory written by save_pretrained")
    card.add_argument("--metrics", help="the evaluate --json file to put in the card")
    card.add_argument("--license", default="other")
    card.set_defaults(run=_card)

    quickstart = commands.add_parser("quickstart", help="the main job on the embedded defaults")
    quickstart.add_argument("--output-dir", default="clinical-prompt-output")
    quickstart.add_argument("--corpus", help="BRAT folder (default: the bundled MACCROBAT corpus)")
    quickstart.add_argument("--schema", help="schema name or YAML file (default: maccrobat-med)")
    quickstart.add_argument("--backbone", help="hub id or model folder (default: the offline MiniLM)")
    quickstart.add_argument("--epochs", type=int)
    quickstart.add_argument("--train-documents", type=int, help="documents to train on (default 30)")
    quickstart.add_argument("--test-documents", type=int, help="held-out documents, the last by name (default 20)")
    quickstart.set_defaults(run=_quickstart)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``clinical-prompt`` console script; input problems exit with status 2 and one message."""
    args = build_parser().parse_args(argv)
    from clinical_prompt.brat import BratFormatError
    from clinical_prompt.extractors import ExtractorFormatError
    from clinical_prompt.prompts import AdapterCompatibilityError, AdapterFormatError
    from clinical_prompt.schema import SchemaError

    input_errors = (BratFormatError, SchemaError, AdapterFormatError, AdapterCompatibilityError, ExtractorFormatError)
    try:
        return args.run(args)
    except (*input_errors, OSError) as error:
        print(f"clinical-prompt: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
