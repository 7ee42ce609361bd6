"""The ``shape`` recipe: the prompt shape study for the soft-prompt strategies.

Starting from the ``prompt`` section (the base shape), each axis of the ``shape`` section is varied alone: prompt
length, input-layer vs deep, reparameterization (none / MLP / LSTM), one block per type vs one shared block, and
initialization. Every variant trains once per strategy. Writes into ``output_dir``: ``run.json``, ``results.csv``
and ``results.md`` (the shape, F1, trainable parameters and adapter size of each variant) and ``shape.png``
(concept strict F1 against trainable parameters, one colour per axis).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from clinical_prompt.atomic import write_text
from clinical_prompt.recipes.config import PromptSection, ShapeRecipe
from clinical_prompt.recipes.runs import SCORE_COLUMNS, begin_run, end_run, is_main_process, load_splits, run_cell
from clinical_prompt.recipes.tables import markdown_table, scatter_plot, write_csv

AXES = ("num_virtual_tokens", "depth", "reparameterization", "sharing", "prompt_init")
COLUMNS = ("strategy", "variant", "axis", *AXES, *SCORE_COLUMNS, "trainable_parameters", "adapter_mib",
           "train_seconds", "peak_memory_mib")


def variants(base: PromptSection, shape: Any) -> list[tuple[str, str, PromptSection]]:
    """``(name, axis, prompt)``: the base shape, then each value of each axis that differs from the base."""
    found = [("base", "base", base)]
    for axis in AXES:
        for value in getattr(shape, axis):
            if value != getattr(base, axis):
                found.append((f"{axis}={value}", axis, dataclasses.replace(base, **{axis: value})))
    return found


def run(config: ShapeRecipe) -> dict[str, Any]:
    """Train every variant and write the table and plot; the run's summary."""
    metadata = begin_run("shape", config)
    output, seed = Path(config.output_dir), config.training.seed
    splits = load_splits(config.data, seed)
    train_docs = splits.training_sample(config.data, seed)
    rows = []
    for strategy in config.shape.strategies or [config.model.strategy]:
        for name, axis, prompt in variants(config.prompt, config.shape):
            row = run_cell(f"{strategy} {name}", splits.schema, strategy, config.model.backbone, config.model, prompt,
                           config.training, train_docs, splits.dev, {"test": splits.test},
                           output / "runs" / f"{strategy}-{name.replace('=', '-')}")
            rows.append({"strategy": strategy, "variant": name, "axis": axis,
                         **{a: getattr(prompt, a) for a in AXES}, **row})
            if is_main_process():
                write_csv(output / "results.csv", rows, COLUMNS)
    if is_main_process():
        shown = ("strategy", "variant", "concept_strict_f1", "concept_lenient_f1", "relation_strict_f1",
                 "trainable_parameters", "adapter_mib", "train_seconds")
        write_text(output / "results.md", f"Base shape: {dataclasses.asdict(config.prompt)}\n\n"
                   + markdown_table(rows, shown, {"adapter_mib": "adapter MiB", "train_seconds": "train s"}))
        series: dict[str, list[tuple[float, float, str]]] = {}
        for r in rows:
            label = r["variant"].partition("=")[2] or "base"
            if len(config.shape.strategies) > 1:
                label = f"{label} ({r['strategy']})"
            series.setdefault(r["axis"], []).append((r["trainable_parameters"], r["concept_strict_f1"], label))
        scatter_plot(output / "shape.png", series, xlabel="trainable parameters",
                     ylabel="concept strict F1 (micro)", title="Prompt shape: F1 against trainable parameters")
    return end_run(config, metadata, {"runs": len(rows), "files": ["results.csv", "results.md", "shape.png"]})
