"""The ``train`` recipe: fit one extractor on a corpus, save it with its model card, score it on the test split.

Writes into ``output_dir``: ``run.json`` (config, versions, data checksums, git revision), ``model/`` (the saved
extractor and its ``README.md`` card; load it with ``clinical_prompt.extractors.load_extractor``),
``metrics.json`` (the n2c2 evaluation JSON of the test split), ``predictions/`` (BRAT ``.txt`` / ``.ann`` of the
test documents) and ``training/`` (the training lock; checkpoints with ``training.keep_checkpoints``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from clinical_prompt.atomic import write_json
from clinical_prompt.brat import write_document
from clinical_prompt.card import training_data_summary, write_card
from clinical_prompt.evaluation import format_table
from clinical_prompt.recipes.config import TrainRecipe
from clinical_prompt.recipes.runs import (
    begin_run,
    build,
    corpus_name,
    end_run,
    f1_columns,
    is_main_process,
    load_splits,
    peak_memory_bytes,
    reset_peak_memory,
    score,
    train,
    trainable_parameters,
)


def run(config: TrainRecipe) -> dict[str, Any]:
    """Train, save, score and write as the module docstring says; the run's summary."""
    metadata = begin_run("train", config)
    output, seed = Path(config.output_dir), config.training.seed
    splits = load_splits(config.data, seed)
    train_docs = splits.training_sample(config.data, seed)

    reset_peak_memory()
    extractor = build(splits.schema, config.model.strategy, config.model.backbone, config.model, config.prompt, seed)
    result = train(extractor, train_docs, splits.dev, config.training, output / "training")
    peak = peak_memory_bytes()
    scores, predictions = score(extractor, splits.test, config.training.eval_batch_size)

    summary = {
        "train_documents": len(train_docs), "dev_documents": len(splits.dev), "test_documents": len(splits.test),
        **f1_columns(scores, splits.schema), "epochs_run": len(result.history), "best_epoch": result.best_epoch,
        "train_loss": [epoch["train_loss"] for epoch in result.history],
        "trainable_parameters": trainable_parameters(extractor), "train_seconds": round(result.train_seconds, 1),
        "peak_memory_mib": round(peak / 2**20), "documents_per_process": predictions.per_process,
    }
    if is_main_process():
        extractor.save_pretrained(output / "model")
        write_card(output / "model", metrics=scores,
                   training_data=training_data_summary(corpus_name(config.data.train), train_docs))
        for document in predictions.documents:
            write_document(document, output / "predictions", write_text=True)
        write_json(output / "metrics.json", scores)
        print(format_table(scores))
        print(f"model: {output / 'model'}; metrics: {output / 'metrics.json'}; predictions: {output / 'predictions'}")
    return end_run(config, metadata, summary)
