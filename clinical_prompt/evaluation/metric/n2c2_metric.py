"""2018 n2c2 Track 2 scores as a Hugging Face ``evaluate`` metric, loadable offline by path.

Each prediction and reference is one document: ``{"entities": [{"id", "type", "start", "end"}],
"relations": [{"id", "type", "arg1", "arg2"}]}`` (``arg1``/``arg2`` are entity ids of the same
document; ``start``/``end`` the outer character bounds). Predictions and references pair by position.
``compute`` returns the dict of :func:`clinical_prompt.evaluation.n2c2.evaluate_documents`, counted as the
official n2c2 script counts unless ``compute(..., matching="one-to-one")``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datasets
import evaluate

from clinical_prompt.brat import Document, Entity, Relation
from clinical_prompt.evaluation.counting import Matching
from clinical_prompt.evaluation.n2c2 import evaluate_documents

_DOCUMENT = {
    "entities": [
        {"id": datasets.Value("string"), "type": datasets.Value("string"),
         "start": datasets.Value("int64"), "end": datasets.Value("int64")}
    ],
    "relations": [
        {"id": datasets.Value("string"), "type": datasets.Value("string"),
         "arg1": datasets.Value("string"), "arg2": datasets.Value("string")}
    ],
}


def document_to_example(doc: Document) -> dict[str, list[dict[str, Any]]]:
    """The metric input for one document (discontinuous spans collapse to outer bounds)."""
    return {
        "entities": [{"id": e.id, "type": e.type, "start": min(s for s, _ in e.spans),
                      "end": max(end for _, end in e.spans)} for e in doc.entities.values()],
        "relations": [{"id": r.id, "type": r.type, "arg1": r.arg1, "arg2": r.arg2} for r in doc.relations.values()],
    }


def example_to_document(example: Mapping[str, Any], doc_id: str) -> Document:
    """The (text-less) document of one metric input."""
    return Document(
        doc_id,
        "",
        entities={e["id"]: Entity(e["id"], e["type"], ((e["start"], e["end"]),)) for e in example["entities"]},
        relations={r["id"]: Relation(r["id"], r["type"], r["arg1"], r["arg2"]) for r in example["relations"]},
    )


class N2c2Metric(evaluate.Metric):
    """Strict and lenient precision, recall and F1 of concepts and relations (n2c2 rules and counts)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions, references: lists of documents (entities and relations)",
            features=datasets.Features({"predictions": _DOCUMENT, "references": _DOCUMENT}),
        )

    def _compute(self, predictions: list[dict], references: list[dict], matching: Matching = "official"
                 ) -> dict[str, Any]:
        pred = {str(i): example_to_document(p, str(i)) for i, p in enumerate(predictions)}
        gold = {str(i): example_to_document(r, str(i)) for i, r in enumerate(references)}
        return evaluate_documents(gold, pred, matching=matching)
