"""The ``extract`` recipe: annotate documents with a saved extractor; BRAT ``.txt`` / ``.ann`` out.

:func:`extract_to_brat` is the library function (each document predicted once across the processes of an
``accelerate launch``); the recipe adds ``run.json`` beside the predictions.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from clinical_prompt.brat import Document, write_document
from clinical_prompt.distributed import extract_documents, process_state
from clinical_prompt.extractors import load_extractor
from clinical_prompt.readers import read_documents
from clinical_prompt.recipes.config import ExtractRecipe
from clinical_prompt.recipes.runs import begin_run, end_run, is_main_process


def extract_to_brat(model_dir: str | os.PathLike, input_path: str | os.PathLike, output_dir: str | os.PathLike, *,
                    format: str = "brat", batch_size: int = 32, backbone: str | None = None) -> list[Document]:
    """Predict the documents at ``input_path`` (in ``format``; their annotations are ignored) with the extractor
    saved in ``model_dir`` (a frozen one loaded onto ``backbone`` where it recorded none), on this process's device,
    and write them to ``output_dir`` (main process); the predicted documents."""
    extractor = load_extractor(model_dir, backbone=backbone).to(process_state().device)
    documents = [Document(d.doc_id, d.text) for d in read_documents(input_path, format)]
    predictions = extract_documents(extractor, documents, batch_size=batch_size).documents
    if is_main_process():
        for document in predictions:
            write_document(document, output_dir, write_text=True)
    return predictions


def run(config: ExtractRecipe) -> dict[str, Any]:
    """:func:`extract_to_brat` with ``run.json`` beside its output; the run's summary."""
    metadata = begin_run("extract", config)
    predictions = extract_to_brat(config.model_dir, config.input, config.output_dir, format=config.format,
                                  batch_size=config.batch_size, backbone=config.backbone)
    summary = {"documents": len(predictions), "entities": sum(len(d.entities) for d in predictions),
               "relations": sum(len(d.relations) for d in predictions)}
    if is_main_process():
        print(f"{summary['documents']} documents annotated ({summary['entities']} entities, "
              f"{summary['relations']} relations) in {Path(config.output_dir)}")
    return end_run(config, metadata, summary)
