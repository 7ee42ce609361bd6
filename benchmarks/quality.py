"""Extraction quality at full size: every cell of corpus x method x backbone trained to convergence and scored.

    python benchmarks/quality.py --config benchmarks/configs/quality.yaml [--only PATTERN ...] [--redo] [key=value ...]
    python benchmarks/quality.py --config benchmarks/configs/quality.yaml --table-only

Methods are the library's four strategies and the stock peers of ``benchmarks/stock_peers.py``, on the same splits.
Each cell trains in a process of its own (its peak memory is its own) with dev early stopping under an epoch cap,
is scored on the test split with :func:`clinical_prompt.evaluation.evaluate_documents`, and appends one JSON line to
``output_dir/cells.jsonl``. Cells run one at a time in grid order; a cell that has its line is skipped (``--redo``
runs the selected cells again and replaces their lines), so the table fills over several sittings. ``--only
'ddi/*/minilm'`` (repeatable, shell patterns over ``corpus/method/backbone``) picks cells. After each cell
``results.csv``, ``results.md`` (which names the missing cells and why) and ``results.png`` are rewritten;
``run.json`` records the sitting's resolved config, versions, data checksums and git revision. A corpus whose files
are absent and a backbone that cannot be loaded are skipped with a message. The config is described in
``benchmarks/configs/quality.yaml``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from stock_peers import STOCK_METHODS, STOCK_TRAINED_PARTS, StockPeer

from clinical_prompt.atomic import write_text
from clinical_prompt.backbone import backbone_problem, resolve_backbone
from clinical_prompt.brat import Document
from clinical_prompt.cli import add_recipe_arguments, run_guarded
from clinical_prompt.corpus import sample_documents, train_dev_split
from clinical_prompt.corpus.splits import hold_out, read_mapped
from clinical_prompt.evaluation import evaluate_documents
from clinical_prompt.extractors import STRATEGIES, build_extractor
from clinical_prompt.fit import dev_scores, fit
from clinical_prompt.readers import FORMATS, resolve_corpus_path
from clinical_prompt.recipes import runs
from clinical_prompt.recipes.config import (
    ConfigError,
    ModelConfig,
    PromptSection,
    TrainingSection,
    check_model,
    config_to_yaml,
    load_config,
)
from clinical_prompt.recipes.metadata import finished, git_revision, path_checksums, run_metadata, write_run_metadata
from clinical_prompt.recipes.tables import bar_plot, markdown_table, write_csv
from clinical_prompt.schema import SchemaError, load_schema
from clinical_prompt.training import TrainingConfig, TrainingResult, train

SCRIPT = Path(__file__).resolve()
METHODS = (*STRATEGIES, *STOCK_METHODS)
CELLS_FILE = "cells.jsonl"
SCORES = {  # result column -> the loop's dev metric of the same score
    "concept_strict_f1": "strict_f1", "concept_lenient_f1": "lenient_f1",
    "relation_strict_f1": "relation_strict_f1", "relation_lenient_f1": "relation_lenient_f1",
}
COLUMNS = ("corpus", "backbone", "method", "stock", *SCORES, *(f"dev_{s}" for s in SCORES), "epochs_run", "best_epoch",
           "epoch_cap", "wall_minutes", "train_minutes", "tokens_per_second", "peak_memory_mib",
           "trainable_parameters", "train_documents", "dev_documents", "test_documents", "git_revision", "finished")
logger = logging.getLogger("clinical_prompt.quality")


def _option(default: Any = dataclasses.MISSING, *, help: str, choices: tuple[str, ...] = (),
            factory: Any = dataclasses.MISSING) -> Any:
    metadata = {"help": help, "choices": choices}
    return field(default=default, default_factory=factory, metadata=metadata)


@dataclass
class CorpusSection:
    """One corpus and its split. Its paths are not required to exist: a corpus whose files are absent is skipped."""

    train: str = _option(help="training documents (a folder or file in `format`; bundled:NAME for a bundled corpus)")
    schema: str = _option(help="built-in schema name or schema YAML file")
    format: str = _option("brat", choices=FORMATS, help="how the corpus is stored")
    test: str | None = _option(None, help="test documents; null: held out of train")
    dev: str | None = _option(None, help="dev documents; null: dev_fraction of the training documents")
    test_fraction: float | None = _option(None, help="without test: a seeded share of train held out as test")
    test_documents: int | None = _option(
        None, help="with test: a seeded sample of this many (null: all); without test and test_fraction: the last "
                   "this many of train by sorted id")
    dev_fraction: float = _option(0.1, help="without dev: the seeded share of the training documents kept for dev")
    train_documents: int | None = _option(None, help="a seeded sample of this many training documents (null: all)")
    annotated_only: bool = _option(False, help="keep only documents with a concept of the schema, in every split")

    def paths(self) -> dict[str, str]:
        """The set paths by key (``train``, ``dev``, ``test``)."""
        return {key: path for key in ("train", "dev", "test") if (path := getattr(self, key)) is not None}


@dataclass
class MethodSettings:
    """One method's hyperparameters; a null rate, batch size or epoch cap takes the `training` section's (a null
    rate there: the strategy's default)."""

    backbone_lr: float | None = _option(None, help="backbone learning rate")
    head_lr: float | None = _option(None, help="head learning rate (stock: the classifier)")
    prompt_lr: float | None = _option(None, help="prompt learning rate (stock PEFT: the prompt encoder)")
    batch_size: int | None = _option(None, help="rows per batch")
    epochs: int | None = _option(None, help="epoch cap (dev early stopping ends most runs before it)")
    max_length: int = _option(256, help="word pieces per row (MRC: query and prompt included; stock PEFT: text only)")
    negative_ratio: float | None = _option(
        None, help="MRC: rows without an answer kept per row with one; finetune: negative entity pairs per positive; "
                   "null: the extractor's default (MRC: all; finetune: 5)")


@dataclass
class QualityBenchmark:
    """The quality benchmark's config (``benchmarks/configs/quality.yaml``)."""

    output_dir: str = _option("benchmarks/results/quality", help="where cells.jsonl, the table, plot and run.json go")
    corpora: dict[str, CorpusSection] = _option(factory=dict, help="corpus name -> corpus")
    methods: dict[str, MethodSettings] = _option(
        factory=dict, help=f"method -> its hyperparameters, in table order; methods: {', '.join(METHODS)}")
    backbones: dict[str, list[str]] = _option(
        factory=lambda: {"minilm": ["*"]}, help="backbone -> the `corpus/method` patterns it runs")
    prompt: PromptSection = _option(factory=PromptSection, help="the soft prompt of soft-prompt and soft-prompt-frozen")
    training: TrainingSection = _option(factory=TrainingSection, help="every method's training settings")

    def check(self) -> None:
        """Refuse values that do not go together (:class:`ConfigError`)."""
        for name in ("corpora", "methods", "backbones"):
            if not getattr(self, name):
                raise ConfigError(name, "name at least one")
        for name, corpus in self.corpora.items():
            _check_corpus(corpus, f"corpora.{name}")
        for method, settings in self.methods.items():
            _check_method(method, settings, f"methods.{method}")
        if self.training.early_stopping_patience is None:
            raise ConfigError("training.early_stopping_patience", "required: each cell trains until dev stops gaining")
        strategies = [method for method in self.methods if method in STRATEGIES]
        check_model(ModelConfig(), self.prompt, self.training, strategies or ["finetune"])


def _check_corpus(corpus: CorpusSection, key: str) -> None:
    if corpus.test is None and (corpus.test_fraction is None) == (corpus.test_documents is None):
        raise ConfigError(f"{key}.test", "without a test path, give one of test_fraction and test_documents")
    for name in ("test_fraction", "dev_fraction"):
        value = getattr(corpus, name)
        if value is not None and not 0 <= value < 1:
            raise ConfigError(f"{key}.{name}", f"must be in [0, 1), got {value}")
    for name in ("test_documents", "train_documents"):
        if (value := getattr(corpus, name)) is not None and value < 1:
            raise ConfigError(f"{key}.{name}", f"must be >= 1 or null, got {value}")
    try:
        load_schema(corpus.schema)
    except (SchemaError, FileNotFoundError, ValueError) as error:
        raise ConfigError(f"{key}.schema", str(error)) from None


def _check_method(method: str, settings: MethodSettings, key: str) -> None:
    if method not in METHODS:
        raise ConfigError(key, f"unknown method; allowed: {', '.join(METHODS)}")
    for name in ("batch_size", "epochs", "max_length"):
        if (value := getattr(settings, name)) is not None and value < 1:
            raise ConfigError(f"{key}.{name}", f"must be >= 1, got {value}")
    stock = method in STOCK_METHODS
    trained = STOCK_TRAINED_PARTS[method] if stock else [
        part for part, rate in STRATEGIES[method].learning_rates().items() if rate is not None]
    for part in ("backbone", "head", "prompt"):
        rate = getattr(settings, f"{part}_lr")
        if rate is None and stock and part in trained:
            raise ConfigError(f"{key}.{part}_lr", "required: a stock method has no default rate")
        if rate is not None and part not in trained:
            raise ConfigError(f"{key}.{part}_lr", f"{method} does not train the {part}")
        if rate is not None and rate <= 0:
            raise ConfigError(f"{key}.{part}_lr", f"must be > 0, got {rate}")


@dataclass(frozen=True)
class Cell:
    """One cell of the grid."""

    corpus: str
    method: str
    backbone: str

    @property
    def name(self) -> str:
        return f"{self.corpus}/{self.method}/{Path(self.backbone).name}"


def grid(config: QualityBenchmark) -> list[Cell]:
    """Every cell, by corpus, then backbone, then method (the config's orders)."""
    return [Cell(corpus, method, backbone) for corpus in config.corpora
            for backbone, patterns in config.backbones.items() for method in config.methods
            if any(fnmatch(f"{corpus}/{method}", pattern) for pattern in patterns)]


def load_corpus(corpus: CorpusSection, seed: int) -> runs.Splits:
    """The corpus mapped onto its schema and split: training pool, dev and test documents."""
    schema = load_schema(corpus.schema)

    def read(path: str) -> list[Document]:
        documents = read_mapped(path, schema, format=corpus.format)
        return [d for d in documents if d.entities] if corpus.annotated_only else documents

    train_docs = read(corpus.train)
    if corpus.test is not None:
        test_docs = read(corpus.test)
        if corpus.test_documents is not None:
            test_docs = sorted(sample_documents(test_docs, corpus.test_documents, seed=seed), key=lambda d: d.doc_id)
    elif corpus.test_fraction is not None:
        train_docs, test_docs = train_dev_split(train_docs, corpus.test_fraction, seed=seed)
    else:
        train_docs, test_docs = hold_out(train_docs, corpus.test_documents)
    if corpus.dev is not None:
        dev_docs = read(corpus.dev)
    else:
        train_docs, dev_docs = train_dev_split(train_docs, corpus.dev_fraction, seed=seed)
    return runs.Splits(schema, train_docs, dev_docs, test_docs)


def method_training(config: QualityBenchmark, method: str) -> TrainingSection:
    """The `training` section with the method's own rates, batch size and epoch cap."""
    settings = config.methods[method]
    own = {"backbone_lr": settings.backbone_lr, "head_lr": settings.head_lr, "prompt_lr": settings.prompt_lr,
           "batch_size": settings.batch_size, "epochs": settings.epochs}
    return dataclasses.replace(config.training, **{k: v for k, v in own.items() if v is not None})


def resumable(training: TrainingSection, run_dir: Path) -> TrainingConfig:
    """The loop's config of ``training``, checkpointing into ``run_dir`` and resuming from its last complete
    checkpoint: a cell cut off in one sitting goes on from its last finished epoch in the next."""
    return dataclasses.replace(training.training_config(run_dir), resume=True)


def train_strategy(cell: Cell, splits: runs.Splits, train_docs: list[Document], config: QualityBenchmark,
                   run_dir: Path) -> tuple[Any, TrainingResult, int]:
    """One of the library's strategies, trained with dev early stopping: (extractor, result, trainable)."""
    settings, training = config.methods[cell.method], method_training(config, cell.method)
    if STRATEGIES[cell.method].input_format == "bio":
        torch.manual_seed(training.seed)
        options = {} if settings.negative_ratio is None else {"negative_ratio": settings.negative_ratio}
        extractor = build_extractor(cell.method, splits.schema, cell.backbone, max_length=settings.max_length,
                                    **options)
    else:
        model = ModelConfig(strategy=cell.method, backbone=cell.backbone, max_length=settings.max_length,
                            negative_ratio=settings.negative_ratio)
        extractor = runs.build(splits.schema, cell.method, cell.backbone, model, config.prompt, training.seed)
    result = fit(extractor, train_docs, splits.dev, resumable(training, run_dir),
                 learning_rates=runs.learning_rates(training, cell.method), eval_batch_size=training.eval_batch_size)
    return extractor, result, runs.trainable_parameters(extractor)


def train_stock(cell: Cell, splits: runs.Splits, train_docs: list[Document], config: QualityBenchmark,
                run_dir: Path) -> tuple[StockPeer, TrainingResult, int]:
    """A stock peer, trained with the library's loop and the same dev early stopping: (peer, result, trainable)."""
    settings, training = config.methods[cell.method], method_training(config, cell.method)
    torch.manual_seed(training.seed)
    peer = StockPeer(cell.method, resolve_backbone(cell.backbone), splits.schema.concept_names, settings.max_length)
    rates = {"backbone": training.backbone_lr, "head": training.head_lr, "prompt": training.prompt_lr}
    result = train(peer.tagger, peer.rows(train_docs), config=resumable(training, run_dir),
                   collate_fn=peer.collate, param_groups=peer.param_groups(rates, training.weight_decay),
                   evaluate_fn=lambda _: dev_scores(peer, splits.dev, batch_size=training.eval_batch_size))
    trainable = sum(p.numel() for p in peer.tagger.parameters() if p.requires_grad)
    return peer, result, trainable


def cell_dir(config: QualityBenchmark, cell: Cell) -> Path:
    """Where ``cell`` keeps its checkpoints while it trains."""
    return Path(config.output_dir) / "runs" / cell.name.replace("/", "-")


def run_cell(config: QualityBenchmark, cell: Cell) -> dict[str, Any]:
    """Train and score one cell in this process; its result row."""
    started = time.perf_counter()
    corpus, seed = config.corpora[cell.corpus], config.training.seed
    splits = load_corpus(corpus, seed)
    train_docs = splits.training_sample(corpus, seed)
    run_dir = cell_dir(config, cell)
    stock = cell.method in STOCK_METHODS
    logger.info("%s: %d training, %d dev, %d test documents", cell.name, len(train_docs), len(splits.dev),
                len(splits.test))
    model, result, trainable = (train_stock if stock else train_strategy)(cell, splits, train_docs, config, run_dir)
    training = method_training(config, cell.method)
    predictions = model.extract(splits.test, batch_size=training.eval_batch_size)
    scores = evaluate_documents({d.doc_id: d for d in splits.test}, {d.doc_id: d for d in predictions})
    if not training.keep_checkpoints:
        shutil.rmtree(run_dir, ignore_errors=True)
        if not any(run_dir.parent.iterdir()):
            run_dir.parent.rmdir()
    relations = bool(splits.schema.relations) and not stock
    best = next((e["metrics"] for e in result.history if e["epoch"] == result.best_epoch), {})
    row = {"cell": cell.name, "corpus": cell.corpus, "backbone": Path(cell.backbone).name, "method": cell.method,
           "stock": stock}
    for score, metric in SCORES.items():
        kind, mode = score.split("_")[:2]
        scored = relations or kind == "concept"
        row[score] = scores[f"{kind}s"][mode]["micro"]["f1"] if scored else None
        row[f"dev_{score}"] = best.get(metric) if scored else None
    row.update({
        "epochs_run": len(result.history), "best_epoch": result.best_epoch, "epoch_cap": training.epochs,
        "wall_minutes": round((time.perf_counter() - started) / 60, 2),
        "train_minutes": round(result.train_seconds / 60, 2),
        "tokens_per_second": round(result.tokens_per_second or 0.0, 1),
        "peak_memory_mib": round(runs.peak_memory_bytes() / 2**20), "trainable_parameters": trainable,
        "train_documents": len(train_docs), "dev_documents": len(splits.dev), "test_documents": len(splits.test),
        "settings": {"training": dataclasses.asdict(training),
                     "method": dataclasses.asdict(config.methods[cell.method])},
        "git_revision": git_revision(SCRIPT.parent),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    return row


# --- results ----------------------------------------------------------------------------------------------------


def read_rows(output: Path) -> dict[str, dict[str, Any]]:
    """The finished cells' rows by cell name (a later line replaces an earlier one of the same cell)."""
    path = output / CELLS_FILE
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return {row["cell"]: row for row in map(json.loads, filter(str.strip, lines))}


def append_row(output: Path, row: dict[str, Any]) -> None:
    """Add ``row`` to ``cells.jsonl`` (replacing the cell's earlier row), atomically; grids running side by side
    on one output take turns."""
    with FileLock(output / f"{CELLS_FILE}.lock"):
        rows = read_rows(output)
        rows.pop(row["cell"], None)
        write_text(output / CELLS_FILE, "".join(json.dumps(r) + "\n" for r in [*rows.values(), row]))


def skip_reasons(config: QualityBenchmark) -> dict[str, str]:
    """Why cells cannot run here, by cell name: a corpus file that is absent, a backbone that cannot be loaded."""
    corpora = {name: next((f"corpus {name}: its {key} documents {path} are absent" for key, path in
                           corpus.paths().items() if not resolve_corpus_path(path).exists()), None)
               for name, corpus in config.corpora.items()}
    backbones = {name: f"backbone {name} cannot be loaded: {problem}" if (problem := backbone_problem(name)) else None
                 for name in config.backbones}
    return {cell.name: reason for cell in grid(config) if (reason := corpora[cell.corpus] or backbones[cell.backbone])}


def _label(method: str) -> str:
    return f"{method} (stock)" if method in STOCK_METHODS else method


def write_results(config: QualityBenchmark, reasons: dict[str, str]) -> list[str]:
    """Write ``results.csv``, ``results.md`` and ``results.png`` from the finished cells of the grid; the missing
    cells' names."""
    output, cells = Path(config.output_dir), grid(config)
    done = read_rows(output)
    rows = [done[cell.name] for cell in cells if cell.name in done]
    missing = [cell.name for cell in cells if cell.name not in done]
    write_csv(output / "results.csv", rows, COLUMNS)
    shown = [{**row, "method": _label(row["method"]), "epochs": f"{row['epochs_run']} ({row['best_epoch']})"}
             for row in rows]
    headers = {"concept_strict_f1": "concepts strict", "concept_lenient_f1": "concepts lenient",
               "relation_strict_f1": "relations strict", "relation_lenient_f1": "relations lenient",
               "dev_concept_strict_f1": "dev concepts strict", "dev_relation_strict_f1": "dev relations strict",
               "epochs": "epochs (best)", "wall_minutes": "wall min", "tokens_per_second": "tokens/s",
               "peak_memory_mib": "peak MiB", "trainable_parameters": "trainable"}
    training = config.training
    text = (f"# Extraction quality\n\nn2c2 micro-F1 on each corpus's test split (relations end to end; `-`: not "
            f"scored, concepts-only corpus or stock peer without a relation head); dev: the kept epoch's dev score. "
            f"Early stopping after {training.early_stopping_patience} epochs without dev concept strict F1 gain, "
            f"epoch cap {training.epochs} unless a method sets its own. Each cell ran in a process of its own: "
            f"peak MiB is that process's peak resident memory (GPU: peak allocation).\n\n"
            + markdown_table(shown, ["corpus", "backbone", "method", *SCORES, "dev_concept_strict_f1",
                                     "dev_relation_strict_f1", "epochs", "wall_minutes", "tokens_per_second",
                                     "peak_memory_mib", "trainable_parameters"], headers)
            + f"\n{len(missing)} of {len(cells)} cells missing"
            + (":\n\n" + "".join(f"- {name}: {reasons.get(name, 'not run yet')}\n" for name in missing)
               if missing else ".\n"))
    write_text(output / "results.md", text)
    _plot(output / "results.png", config, rows)
    return missing


def _plot(path: Path, config: QualityBenchmark, rows: list[dict[str, Any]]) -> None:
    """Strict micro-F1 per corpus and backbone (concepts, and relations where scored), one bar per method; the
    stock peers hatched."""
    groups: dict[str, dict[str, float]] = {}
    for cell in grid(config):
        for kind in ("concept", "relation"):
            groups.setdefault(f"{cell.corpus} / {Path(cell.backbone).name} {kind}s", {})
    for row in rows:
        for kind in ("concept", "relation"):
            if row[f"{kind}_strict_f1"] is not None:
                groups[f"{row['corpus']} / {row['backbone']} {kind}s"][row["method"]] = row[f"{kind}_strict_f1"]
    shown = [name for name, values in groups.items() if values or name.endswith("concepts")]
    bars = {_label(m): [groups[g].get(m, math.nan) for g in shown] for m in config.methods}
    bar_plot(path, shown, bars, ylabel="strict micro-F1 (test)", title="Extraction quality",
             hatched={_label(m) for m in STOCK_METHODS})


# --- command line -----------------------------------------------------------------------------------------------


def run_child(cell: Cell, args: argparse.Namespace) -> int:
    """Run ``cell`` in a new process of this script (same config and overrides); its exit status."""
    command = [sys.executable, str(SCRIPT), "--config", args.config, *args.overrides, "--cell", cell.name]
    return subprocess.run(command, check=False).returncode


def run_grid(config: QualityBenchmark, args: argparse.Namespace) -> int:
    """Run the selected missing cells one at a time, each in a child process; then write the results."""
    output = Path(config.output_dir)
    metadata = run_metadata("quality", config)
    metadata["data"] = {f"corpora.{name}.{key}": {"path": path, **path_checksums(path)}
                        for name, corpus in config.corpora.items() for key, path in corpus.paths().items()
                        if resolve_corpus_path(path).exists()}
    write_run_metadata(output, metadata)
    reasons, failed = skip_reasons(config), []
    for cell in grid(config):
        if args.only and not any(fnmatch(cell.name, pattern) for pattern in args.only):
            continue
        if cell.name in reasons:
            logger.warning("%s: skipped, %s", cell.name, reasons[cell.name])
        elif cell.name in read_rows(output) and not args.redo:
            logger.info("%s: finished in an earlier sitting", cell.name)
        elif not args.table_only:
            logger.info("%s: training", cell.name)
            if args.redo:  # new settings: no resuming from the checkpoints of earlier ones
                shutil.rmtree(cell_dir(config, cell), ignore_errors=True)
            if run_child(cell, args) != 0:
                failed.append(cell.name)
                reasons[cell.name] = "failed in the last sitting (see its log)"
                logger.error("%s: failed; its row stays missing", cell.name)
            write_results(config, reasons)
    missing = write_results(config, reasons)
    write_run_metadata(output, finished(metadata, {"missing": missing, "failed": failed,
                                                   "files": [CELLS_FILE, "results.csv", "results.md", "results.png"]}))
    logger.info("%s: %d cells missing", output / "results.md", len(missing))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(parser)
    parser.add_argument("--only", action="append", default=[], metavar="PATTERN",
                        help="run only the cells whose corpus/method/backbone matches (repeatable)")
    parser.add_argument("--redo", action="store_true", help="run the selected cells even if finished")
    parser.add_argument("--table-only", action="store_true", help="run nothing: rewrite the results files")
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # the child process of one cell
    args = parser.parse_args(argv)
    from clinical_prompt.console import log_to_stderr

    def command() -> int:
        config = load_config(QualityBenchmark, args.config, args.overrides)
        if args.print_config:
            print(config_to_yaml(config), end="")
            return 0
        log_to_stderr()
        if args.cell is None:
            return run_grid(config, args)
        cell = next((c for c in grid(config) if c.name == args.cell), None)
        if cell is None:
            raise ConfigError("", f"no cell {args.cell!r} in the grid")
        append_row(Path(config.output_dir), run_cell(config, cell))
        return 0

    return run_guarded(command)


if __name__ == "__main__":
    sys.exit(main())
