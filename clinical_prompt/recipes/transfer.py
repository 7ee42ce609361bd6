"""The ``transfer`` recipe ("cross-institution"): train on corpus A, score in-domain (A's test split) and on
corpus B (B's test split), per strategy. Both corpora are mapped onto schemas with the same concept and relation
types (one schema that maps both corpora's types, or two schemas with the same type names).

Writes into ``output_dir``: ``run.json``, ``results.csv`` and ``results.md`` (per strategy: in-domain and target
strict / lenient F1, and the drop from one to the other) and ``transfer.png`` (concept strict F1, in-domain
beside target, per strategy).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from clinical_prompt.atomic import write_text
from clinical_prompt.recipes.config import TransferRecipe
from clinical_prompt.recipes.runs import (
    SCORE_COLUMNS,
    begin_run,
    corpus_name,
    end_run,
    is_main_process,
    load_splits,
    run_cell,
)
from clinical_prompt.recipes.tables import bar_plot, markdown_table, write_csv

COLUMNS = ("strategy", "backbone", "source", "target", "train_documents",
           *(f"{split}_{c}" for split in ("in_domain", "target") for c in SCORE_COLUMNS),
           "concept_strict_drop", "trainable_parameters", "adapter_mib", "train_seconds", "peak_memory_mib")


def run(config: TransferRecipe) -> dict[str, Any]:
    """Train each strategy on the source, score both test splits, write the table and plot; the run's summary."""
    metadata = begin_run("transfer", config)
    output, seed = Path(config.output_dir), config.training.seed
    source = load_splits(config.source, seed, "source")
    target = load_splits(config.target, seed, "target").test  # target.train, if given, only holds out its test split
    train_docs = source.training_sample(config.source, seed)
    source_name, target_name = corpus_name(config.source.train), corpus_name(config.target.test or config.target.train)
    rows = []
    for strategy in config.strategies or [config.model.strategy]:
        row = run_cell(strategy, source.schema, strategy, config.model.backbone, config.model, config.prompt,
                       config.training, train_docs, source.dev, {"in_domain": source.test, "target": target},
                       output / "runs" / strategy)
        rows.append({"strategy": strategy, "backbone": config.model.backbone, "source": source_name,
                     "target": target_name, "train_documents": len(train_docs), **row,
                     "concept_strict_drop": row["in_domain_concept_strict_f1"] - row["target_concept_strict_f1"]})
        if is_main_process():
            write_csv(output / "results.csv", rows, COLUMNS)
    if is_main_process():
        headers = {c: c.replace("in_domain_", "in-domain ").replace("target_", "target ").replace("_f1", " F1")
                   .replace("_", " ") for c in COLUMNS}
        shown = ("strategy", "in_domain_concept_strict_f1", "target_concept_strict_f1", "concept_strict_drop",
                 "in_domain_concept_lenient_f1", "target_concept_lenient_f1", "trainable_parameters", "train_seconds")
        write_text(output / "results.md", f"Train on {source_name} ({len(train_docs)} documents); test in-domain "
                   f"({len(source.test)} documents) and on {target_name} ({len(target)} documents).\n\n"
                   + markdown_table(rows, shown, headers))
        bar_plot(output / "transfer.png", [r["strategy"] for r in rows],
                 {f"in-domain ({source_name})": [r["in_domain_concept_strict_f1"] for r in rows],
                  f"target ({target_name})": [r["target_concept_strict_f1"] for r in rows]},
                 ylabel="concept strict F1 (micro)", title=f"Transfer {source_name} -> {target_name}")
    return end_run(config, metadata, {"runs": len(rows), "files": ["results.csv", "results.md", "transfer.png"]})
