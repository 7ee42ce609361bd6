"""The ``evaluate`` recipe: score a saved extractor on gold documents, each predicted once across processes.

Writes into ``output_dir``: ``run.json``, ``metrics.json`` (the n2c2 evaluation JSON) and ``predictions/``
(BRAT ``.txt`` / ``.ann``). The gold documents are mapped with the saved extractor's own schema.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from clinical_prompt.atomic import write_json
from clinical_prompt.brat import write_document
from clinical_prompt.corpus import read_mapped
from clinical_prompt.distributed import process_state
from clinical_prompt.evaluation import format_table
from clinical_prompt.extractors import load_extractor
from clinical_prompt.recipes.config import EvaluateRecipe
from clinical_prompt.recipes.runs import begin_run, end_run, f1_columns, is_main_process, score


def run(config: EvaluateRecipe) -> dict[str, Any]:
    """Load, extract, score and write as the module docstring says; the run's summary."""
    metadata = begin_run("evaluate", config)
    output = Path(config.output_dir)
    extractor = load_extractor(config.model_dir, backbone=config.backbone).to(process_state().device)
    gold = read_mapped(config.test, extractor.schema, format=config.format)
    scores, predictions = score(extractor, gold, config.batch_size)
    if is_main_process():
        for document in predictions.documents:
            write_document(document, output / "predictions", write_text=True)
        write_json(output / "metrics.json", scores)
        print(format_table(scores))
    summary = {"test_documents": len(gold), **f1_columns(scores, extractor.schema),
               "documents_per_process": predictions.per_process}
    return end_run(config, metadata, summary)
