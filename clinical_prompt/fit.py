"""Train an extractor on mapped Documents and score it on a dev set each epoch (n2c2 strict / lenient micro-F1)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from clinical_prompt.brat import Document
from clinical_prompt.distributed import extract_documents
from clinical_prompt.evaluation import evaluate_documents
from clinical_prompt.extractors.base import Extractor
from clinical_prompt.strategies import get_strategy
from clinical_prompt.training import TrainingConfig, TrainingResult, train

RATE_NAMES = ("backbone", "head", "prompt")


def dev_scores(extractor: Extractor, documents: Sequence[Document], *, batch_size: int = 32) -> dict[str, float]:
    """End-to-end micro-F1 of ``extractor`` on gold ``documents``: ``strict_f1`` and ``lenient_f1`` (concepts),
    ``relation_strict_f1`` and ``relation_lenient_f1``. Under several processes each predicts a shard of the
    documents (:func:`clinical_prompt.distributed.extract_documents`)."""
    predictions = extract_documents(extractor, documents, batch_size=batch_size).documents
    result = evaluate_documents({d.doc_id: d for d in documents}, {d.doc_id: d for d in predictions})
    return {
        "strict_f1": result["concepts"]["strict"]["micro"]["f1"],
        "lenient_f1": result["concepts"]["lenient"]["micro"]["f1"],
        "relation_strict_f1": result["relations"]["strict"]["micro"]["f1"],
        "relation_lenient_f1": result["relations"]["lenient"]["micro"]["f1"],
    }


def fit(
    extractor: Extractor,
    train_docs: Sequence[Document],
    dev_docs: Sequence[Document] | None,
    training_config: TrainingConfig,
    *,
    learning_rates: Mapping[str, float] | None = None,
    eval_batch_size: int = 32,
) -> TrainingResult:
    """Train ``extractor`` on mapped ``train_docs`` with :func:`clinical_prompt.training.train`.

    Rates are the strategy's defaults (``backbone``, ``head``, ``prompt``), each replaceable in ``learning_rates``;
    ``training_config.weight_decay`` applies to every group. With ``dev_docs``, each evaluation first fits the
    extractor's decoding settings to them (:meth:`Extractor.calibrate`, e.g. the MRC threshold), then runs
    :func:`dev_scores` (``training_config.metric_for_best`` picks one of its keys); the settings are fitted once more
    when the weights kept at the end are not the last evaluated ones.
    """
    rates = get_strategy(extractor.strategy).learning_rates()
    for name, rate in (learning_rates or {}).items():
        if name not in RATE_NAMES:
            raise ValueError(f"unknown learning rate {name!r}; use {', '.join(RATE_NAMES)}")
        if rates[name] is None:
            raise ValueError(f"strategy {extractor.strategy!r} does not train the {name}")
        rates[name] = rate
    concept_names = set(extractor.schema.concept_names)
    if not any(e.type in concept_names for doc in train_docs for e in doc.entities.values()):
        raise ValueError(f"none of the {len(train_docs)} training documents holds a concept of schema "
                         f"{extractor.schema.name!r}; map the corpus onto it first (TaskSchema.map_document)")
    groups = extractor.param_groups(
        backbone_lr=rates["backbone"] or 0.0,
        head_lr=rates["head"],
        prompt_lr=rates["prompt"] or 0.0,
        weight_decay=training_config.weight_decay,
    )
    rows = extractor.training_rows(train_docs)  # a list of row dicts is a map-style dataset
    dataset, collate, lengths = rows, extractor.collate, None
    if extractor.shares_trunk:  # batches of whole texts: each text's lower layers run once for all its questions
        dataset, collate = same_text_groups(rows), partial(_collate_groups, extractor.collate)
        lengths = [len(group[0]["input_ids"]) for group in dataset]
        training_config = dataclasses.replace(training_config, per_device_batch_size=max(
            1, round(training_config.per_device_batch_size * len(dataset) / len(rows))
        ))

    def evaluate_fn(model: Extractor) -> dict[str, float]:
        model.calibrate(dev_docs, batch_size=eval_batch_size)
        return dev_scores(model, dev_docs, batch_size=eval_batch_size)

    result = train(
        extractor,
        dataset,
        config=training_config,
        collate_fn=collate,
        param_groups=groups,
        evaluate_fn=evaluate_fn if dev_docs else None,
        lengths=lengths,
    )
    last_evaluated = next((e["epoch"] for e in reversed(result.history) if e["metrics"]), None)
    restored = training_config.load_best_at_end and result.best_epoch != last_evaluated
    if dev_docs and (last_evaluated is None or restored):
        extractor.calibrate(dev_docs, batch_size=eval_batch_size)
    return result


def same_text_groups(rows: Sequence[dict]) -> list[list[dict]]:
    """``rows`` grouped by their text (``input_ids`` and ``token_type_ids``), groups in order of first occurrence."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((tuple(row["input_ids"]), tuple(row.get("token_type_ids") or ())), []).append(row)
    return list(groups.values())


def _collate_groups(collate: Callable[[list[dict]], Any], groups: Sequence[list[dict]]) -> Any:
    return collate([row for group in groups for row in group])
