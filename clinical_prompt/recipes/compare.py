"""The ``compare`` recipe: the paper's grid, strategies x backbones x corpora, in one table.

A backbone that cannot be loaded here (a named package not installed, a hub id without network, a missing folder)
is skipped, and ``run.json`` says why. Writes into ``output_dir``: ``run.json``, ``results.csv`` and
``results.md`` (concept and relation strict / lenient F1, trainable parameters, adapter size, train time and peak
memory per cell) and ``results.png`` (concept strict F1 per corpus and backbone, one bar per strategy).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from clinical_prompt.atomic import write_text
from clinical_prompt.backbone import backbone_problem
from clinical_prompt.recipes.config import CompareRecipe
from clinical_prompt.recipes.runs import (
    SCORE_COLUMNS,
    begin_run,
    end_run,
    is_main_process,
    load_splits,
    logger,
    run_cell,
)
from clinical_prompt.recipes.tables import bar_plot, markdown_table, write_csv

COLUMNS = ("corpus", "backbone", "strategy", "train_documents", "test_documents", *SCORE_COLUMNS, "epochs_run",
           "trainable_parameters", "adapter_mib", "train_seconds", "peak_memory_mib")


def run(config: CompareRecipe) -> dict[str, Any]:
    """Run every cell of the grid and write the table and plot; the run's summary."""
    metadata = begin_run("compare", config)
    output, seed = Path(config.output_dir), config.training.seed
    skipped = {name: problem for name in config.backbones if (problem := backbone_problem(name))}
    for name, problem in skipped.items():
        logger.warning("skipping backbone %s: %s", name, problem)
    backbones = [name for name in config.backbones if name not in skipped]
    rows = []
    for corpus, data in config.corpora.items():
        splits = load_splits(data, seed, f"corpora.{corpus}")
        train_docs = splits.training_sample(data, seed)
        for backbone in backbones:
            for strategy in config.strategies:
                name = f"{corpus}-{Path(backbone).name}-{strategy}"
                row = run_cell(name, splits.schema, strategy, backbone, config.model, config.prompt, config.training,
                               train_docs, splits.dev, {"test": splits.test}, output / "runs" / name)
                rows.append({"corpus": corpus, "backbone": backbone, "strategy": strategy,
                             "train_documents": len(train_docs), "test_documents": len(splits.test), **row})
                if is_main_process():
                    write_csv(output / "results.csv", rows, COLUMNS)
    if is_main_process():
        shown = [c for c in COLUMNS if c not in ("train_documents", "test_documents", "epochs_run")]
        write_csv(output / "results.csv", rows, COLUMNS)
        note = "".join(f"\nSkipped backbone {name}: {problem}\n" for name, problem in skipped.items())
        write_text(output / "results.md", markdown_table(rows, shown, {"adapter_mib": "adapter MiB",
                   "peak_memory_mib": "peak MiB", "train_seconds": "train s"}) + note)
        groups = list(dict.fromkeys(f"{r['corpus']} / {Path(r['backbone']).name}" for r in rows))
        bar_plot(output / "results.png", groups,
                 {s: [next((r["concept_strict_f1"] for r in rows if r["strategy"] == s
                            and f"{r['corpus']} / {Path(r['backbone']).name}" == g), 0.0) for g in groups]
                  for s in config.strategies},
                 ylabel="concept strict F1 (micro)", title="Strategies x backbones x corpora")
    return end_run(config, metadata, {"runs": len(rows), "skipped_backbones": skipped,
                                      "files": ["results.csv", "results.md", "results.png"]})
