"""The ``fewshot`` recipe: learning curves, training sizes x strategies x seeds.

For each seed, the training sample of each size is drawn from the training pool (documents, or sentences as
documents of their own with ``fewshot.unit: sentences``); samples are nested, the size-10 sample inside the size-20
one. The dev documents (``data.dev_fraction``, 0 for none) and the test split are the same for every run.

Writes into ``output_dir``: ``run.json``, ``runs.csv`` (one row per run), ``results.csv`` and ``results.md`` (mean
and standard deviation over seeds per strategy and size) and ``learning_curve.png`` (concept strict F1 against
the training size, a band of ± one standard deviation over seeds).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clinical_prompt.atomic import write_text
from clinical_prompt.brat import Document
from clinical_prompt.corpus import sample_documents, sample_sentences
from clinical_prompt.recipes.config import ConfigError, FewshotRecipe
from clinical_prompt.recipes.runs import (
    SCORE_COLUMNS,
    begin_run,
    corpus_name,
    end_run,
    is_main_process,
    load_splits,
    run_cell,
)
from clinical_prompt.recipes.tables import line_plot, markdown_table, mean_and_spread, with_spread, write_csv

RUN_COLUMNS = ("strategy", "backbone", "unit", "size", "seed", *SCORE_COLUMNS, "epochs_run", "trainable_parameters",
               "adapter_mib", "train_seconds", "peak_memory_mib")
SUMMARY_COLUMNS = ("strategy", "size", "runs", *(name for c in SCORE_COLUMNS for name in (c, f"{c}_sd")))


def draw(pool: Sequence[Document], unit: str, size: int, seed: int, annotated_only: bool) -> list[Document]:
    """The training sample of ``size`` documents or sentences (each a Document of its own)."""
    if unit == "sentences":
        return sample_sentences(pool, size, seed=seed, annotated_only=annotated_only)
    return sample_documents(pool, size, seed=seed)


def run(config: FewshotRecipe) -> dict[str, Any]:
    """Run the sweep and write its tables and plot; the run's summary."""
    metadata = begin_run("fewshot", config)
    output, sweep, annotated_only = Path(config.output_dir), config.fewshot, config.data.annotated_only
    splits = load_splits(config.data, config.training.seed)
    try:
        draw(splits.pool, sweep.unit, max(sweep.sizes), sweep.seeds[0], annotated_only)
    except ValueError as error:
        raise ConfigError("fewshot.sizes", f"{error} (the training pool)") from None
    strategies = sweep.strategies or [config.model.strategy]
    rows = []
    for seed in sweep.seeds:
        for size in sorted(sweep.sizes):
            sample = draw(splits.pool, sweep.unit, size, seed, annotated_only)
            for strategy in strategies:
                name = f"{strategy}-{sweep.unit}{size}-seed{seed}"
                row = run_cell(name, splits.schema, strategy, config.model.backbone, config.model, config.prompt,
                               config.training, sample, splits.dev, {"test": splits.test}, output / "runs" / name,
                               seed=seed)
                rows.append({"strategy": strategy, "backbone": config.model.backbone, "unit": sweep.unit,
                             "size": size, "seed": seed, **row})
                if is_main_process():
                    write_csv(output / "runs.csv", rows, RUN_COLUMNS)
    if is_main_process():
        write_results(output, rows, corpus_name(config.data.train), len(sweep.seeds))
    return end_run(config, metadata, {"runs": len(rows), "files": ["runs.csv", "results.csv", "results.md",
                                                                    "learning_curve.png"]})


def write_results(output: Path, rows: Sequence[dict[str, Any]], corpus: str, seeds: int) -> None:
    """``results.csv``, ``results.md`` and ``learning_curve.png`` of the sweep's run ``rows`` (as in ``runs.csv``)."""
    summary = mean_and_spread(rows, ("strategy", "size"), SCORE_COLUMNS)
    unit = rows[0]["unit"]
    write_csv(output / "results.csv", summary, SUMMARY_COLUMNS)
    headers = {"size": f"training {unit}", **{c: c.replace("_f1", " F1").replace("_", " ") for c in SCORE_COLUMNS}}
    write_text(output / "results.md", markdown_table(
        with_spread(summary, SCORE_COLUMNS), ("strategy", "size", "runs", *SCORE_COLUMNS), headers))
    strategies = dict.fromkeys(r["strategy"] for r in rows)
    line_plot(
        output / "learning_curve.png",
        {s: [(r["size"], r["concept_strict_f1"], r["concept_strict_f1_sd"]) for r in summary if r["strategy"] == s]
         for s in strategies},
        xlabel=f"training {unit}", ylabel="concept strict F1 (micro)",
        title=f"Few-shot learning curve on {corpus} (mean ± sd over {seeds} seeds)", log_x=True,
    )
