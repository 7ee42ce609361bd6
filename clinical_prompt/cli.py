"""The ``clinical-prompt`` command line."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from clinical_prompt.console import run_guarded
from clinical_prompt.errors import ClinicalPromptError
from clinical_prompt.recipes.cli import add_recipe_arguments, run_recipe_command

RECIPE_COMMANDS = {
    "train": "train one extractor from a recipe config, save it, score it on the test split",
    "fewshot": "learning curves: training sizes x strategies x seeds (table and plot)",
    "transfer": "train on one corpus, score in-domain and on another corpus (table and plot)",
    "compare": "the grid of strategies x backbones x corpora (table and plot)",
    "shape": "the soft prompt shape study: F1 against trainable parameters (table and plot)",
}


class _UsageError(ClinicalPromptError, ValueError):
    """Arguments that parse but do not go together."""


def _corpus_stats(args: argparse.Namespace) -> int:
    from clinical_prompt.corpus.stats import run_corpus_stats

    return run_corpus_stats(args.directory, args.schema)


def _corpus_align(args: argparse.Namespace) -> int:
    from clinical_prompt.corpus.stats import run_alignment_check

    return run_alignment_check(args.directory, args.schema, args.tokenizer, args.max_length)


def _evaluate(args: argparse.Namespace) -> int:
    if args.config is not None:
        if any(value is not None for value in (args.gold, args.pred, args.schema, args.json)) \
                or args.matching != "official" or args.missing_as_empty:
            raise _UsageError("evaluate --config takes its paths from the config and scores the default way; leave "
                              "out --gold, --pred, --schema, --json, --matching and --missing-as-empty")
        return _recipe("evaluate")(args)
    if args.gold is None or args.pred is None or args.overrides:
        raise _UsageError("evaluate needs --gold DIR --pred DIR, or --config FILE [key=value ...]")
    from clinical_prompt.console import log_to_stderr
    from clinical_prompt.evaluation.n2c2 import run_evaluate

    log_to_stderr(logging.WARNING)  # documents left out are named there
    return run_evaluate(args.gold, args.pred, args.schema, args.json, matching=args.matching,
                        missing="empty" if args.missing_as_empty else "skip")


def _recipe(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return run_recipe_command(name, args)

    return run


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

    print(f"wrote {write_card(args.directory, metrics=args.metrics, license=args.license, repo_id=args.repo_id)}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from clinical_prompt.hub import push_to_hub

    url = push_to_hub(args.directory, args.repo_id, private=args.private or None, revision=args.revision,
                      token=args.token, endpoint=args.endpoint)
    print(f"pushed {args.directory} to {args.repo_id}: {url}")
    return 0


def _extract(args: argparse.Namespace) -> int:
    from clinical_prompt.extract_notes import run_extract

    if args.batch_size < 1:
        raise _UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    return run_extract(args.base, args.adapter, args.input, args.output, args.adapter_for or (),
                       batch_size=args.batch_size, token=args.token)


def _pair(left: str, right: str) -> Callable[[str], tuple[str, str]]:
    """An argparse type for ``LEFT=RIGHT`` values, split at the first ``=``."""
    def parse(value: str) -> tuple[str, str]:
        first, sign, second = value.partition("=")
        if not sign or not first or not second:
            raise argparse.ArgumentTypeError(f"expected {left}={right}, got {value!r}")
        return first, second

    return parse


def _repo_id(value: str) -> str:
    """An argparse type for a hub repository ``ORG/NAME``."""
    from clinical_prompt.pull import parse_repo_id

    if parse_repo_id(value) is None or "@" in value:
        raise argparse.ArgumentTypeError(f"expected ORG/NAME, got {value!r}")
    return value


def _quickstart(args: argparse.Namespace) -> int:
    from clinical_prompt.quickstart import quickstart_config, run_quickstart

    return run_quickstart(quickstart_config(
        args.output_dir, corpus=args.corpus, schema=args.schema, backbone=args.backbone, epochs=args.epochs,
        train_documents=args.train_documents, test_documents=args.test_documents,
        prompt_start_layer=args.prompt_start_layer,
    ))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="clinical-prompt", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    corpus = commands.add_parser("corpus", help="inspect a BRAT corpus")
    corpus = corpus.add_subparsers(dest="corpus_command", required=True)
    stats = corpus.add_parser("stats",
                              help="documents, sentences, concepts and relations per type, and every problem found")
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
    evaluate.add_argument("--gold", help="directory of gold BRAT files")
    evaluate.add_argument("--pred", help="directory of predicted BRAT files")
    evaluate.add_argument("--schema", help="map both sides onto this schema first (what it drops is reported)")
    evaluate.add_argument("--json", help="also write the scores to this JSON file")
    evaluate.add_argument("--matching", choices=("official", "one-to-one"), default="official",
                          help="how matches are counted: as the official n2c2 script (default), or a maximum "
                               "one-to-one matching")
    evaluate.add_argument("--missing-as-empty", action="store_true",
                          help="score a document present on one side only as empty on the other (default: "
                               "leave it out, as the official script)")
    add_recipe_arguments(evaluate, config_required=False)  # --config: the evaluate recipe on a trained model
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
    card.add_argument("--repo-id", type=_repo_id,
                      help="the hub repository ORG/NAME it will be pushed to (its usage snippet loads it)")
    card.set_defaults(run=_card)

    push = commands.add_parser("push", help="upload a saved extractor and its model card to the Hugging Face Hub")
    push.add_argument("directory", help="a directory written by save_pretrained, with its README.md card")
    push.add_argument("--repo-id", required=True, help="the model repository, ORG/NAME; created where missing")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--revision", help="branch to commit to (created where missing; default: main)")
    push.add_argument("--token", help="hub token with write access (default: HF_TOKEN or the stored login)")
    push.add_argument("--endpoint", help="hub URL (default: HF_ENDPOINT or https://huggingface.co)")
    push.set_defaults(run=_push)

    extract = commands.add_parser("extract",
                                  help="extract notes (.txt) with adapters on one shared base, one .ann each")
    extract.add_argument("--base", required=True, help="the adapters' base model: hub id, folder or minilm")
    extract.add_argument("--adapter", required=True, action="append", type=_pair("NAME", "DIR"), metavar="NAME=DIR",
                         help="a soft-prompt-frozen adapter and its name: a folder, or a hub repository "
                              "ORG/REPO[@REVISION] (repeat for several)")
    extract.add_argument("--input", required=True, nargs="+", metavar="DIR_OR_FILE",
                         help="note files, or directories searched for *.txt")
    extract.add_argument("--output", required=True, help="directory for the .ann files (same relative paths)")
    extract.add_argument("--adapter-for", action="append", type=_pair("FILE_GLOB", "NAME"), metavar="FILE_GLOB=NAME",
                         help="notes whose path (relative to its input directory) matches go to adapter NAME; "
                              "the first match wins (needed with several adapters)")
    extract.add_argument("--batch-size", type=int, default=32, help="rows per forward pass")
    extract.add_argument("--token", help="hub token for private adapter repositories (default: HF_TOKEN or the stored "
                                          "login)")
    extract.set_defaults(run=_extract)

    from clinical_prompt.quickstart import QuickstartConfig

    defaults = QuickstartConfig()
    quickstart = commands.add_parser("quickstart", help="the main job on the embedded defaults")
    quickstart.add_argument("--output-dir", default="clinical-prompt-output")
    quickstart.add_argument("--corpus", help="BRAT folder (default: the bundled MACCROBAT corpus)")
    quickstart.add_argument("--schema", help="schema name or YAML file (default: maccrobat-med)")
    quickstart.add_argument("--backbone", help="hub id or model folder (default: the offline MiniLM)")
    quickstart.add_argument("--epochs", type=int, help=f"passes over the training rows (default {defaults.epochs})")
    quickstart.add_argument("--train-documents", type=int,
                            help=f"documents to train on, {defaults.dev_fraction:.0%} of them dev (default "
                                 f"{defaults.train_documents})")
    quickstart.add_argument("--test-documents", type=int,
                            help=f"held-out documents, the last by name (default {defaults.test_documents})")
    quickstart.add_argument("--prompt-start-layer", type=int, help="first layer with deep prompts; the layers "
                            "below run once per text (default: half the backbone's layers; 0: every layer)")
    quickstart.set_defaults(run=_quickstart)

    for name, help_text in RECIPE_COMMANDS.items():
        recipe = commands.add_parser(name, help=help_text, description=f"{help_text}; see recipes/configs/")
        add_recipe_arguments(recipe)
        recipe.set_defaults(run=_recipe(name))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``clinical-prompt`` console script; input problems exit with status 2 and one message."""
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
