"""2018 n2c2 Track 2 scoring of documents and BRAT directories (strict and lenient, concepts and relations).

The result is a JSON-ready dict::

    {"concepts": {"strict": {"micro": {precision, recall, f1, tp, fp, fn},
                             "macro": {precision, recall, f1},
                             "per_type": {TYPE: {precision, recall, f1, tp, fp, fn}}},
                  "lenient": {...}},
     "relations": {...same shape...},
     "documents": {"gold": n, "pred": n, "missing_pred": [ids], "missing_gold": [ids]}}

Matching and one-to-one counting are those of :mod:`clinical_prompt.evaluation.matching`, applied
to each type on its own; zero-division conventions are those of :mod:`clinical_prompt.evaluation.scores`.
Unlike the official script, which skips files present on one side only, every document of either side
is scored: a document without a prediction counts all its gold items as false negatives, a prediction
without gold counts all its items as false positives, and both enter the macro average.
"""
from __future__ import annotations

import dataclasses
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from clinical_prompt.atomic import write_json
from clinical_prompt.brat import Document, read_corpus, read_document
from clinical_prompt.evaluation.matching import MODES, Item, Mode, concepts, count_matches, relations
from clinical_prompt.evaluation.report import format_table
from clinical_prompt.evaluation.scores import Counts, macro, micro
from clinical_prompt.schema import TaskSchema, load_schema

_KINDS: dict[str, Callable[[Document], list[Any]]] = {"concepts": concepts, "relations": relations}


def _count_per_type(gold: Sequence[Item], pred: Sequence[Item], mode: Mode) -> dict[str, Counts]:
    by_type: dict[str, tuple[list[Item], list[Item]]] = defaultdict(lambda: ([], []))
    for side, items in enumerate((gold, pred)):
        for item in items:
            by_type[item.type][side].append(item)
    return {t: count_matches(*by_type[t], mode) for t in sorted(by_type)}


def _aggregate(per_document: Sequence[dict[str, Counts]]) -> dict[str, Any]:
    per_type: dict[str, Counts] = defaultdict(Counts)
    for counts in per_document:
        for type_name, c in counts.items():
            per_type[type_name] += c
    totals = [micro(counts.values()) for counts in per_document]
    return {
        "micro": micro(totals).to_dict(),
        "macro": macro(totals),
        "per_type": {t: per_type[t].to_dict() for t in sorted(per_type)},
    }


def evaluate_documents(gold: Mapping[str, Document], pred: Mapping[str, Document]) -> dict[str, Any]:
    """Score ``pred`` against ``gold`` (both keyed by document id); see the module doc for the result."""
    doc_ids = sorted(set(gold) | set(pred))
    result: dict[str, Any] = {}
    for kind, extract in _KINDS.items():
        pairs = [
            (extract(gold[d]) if d in gold else [], extract(pred[d]) if d in pred else [])
            for d in doc_ids
        ]
        result[kind] = {mode: _aggregate([_count_per_type(g, p, mode) for g, p in pairs]) for mode in MODES}
    result["documents"] = {
        "gold": len(gold),
        "pred": len(pred),
        "missing_pred": sorted(set(gold) - set(pred)),
        "missing_gold": sorted(set(pred) - set(gold)),
    }
    return result


def _read(directory: str | Path, schema: TaskSchema | None) -> dict[str, Document]:
    documents = read_corpus(directory).documents
    return {doc.doc_id: schema.map_document(doc) if schema else doc for doc in documents}


def _read_predictions(pred_dir: str | Path, gold_dir: str | Path, schema: TaskSchema | None) -> dict[str, Document]:
    """The ``.ann`` files under ``pred_dir`` (recursively), each read with the text of its gold document (the
    ``.txt`` beside it where gold has none): a folder written by ``clinical-prompt extract`` holds ``.ann`` files
    only."""
    root = Path(pred_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"not a directory: {root}")
    documents = {}
    for ann_path in sorted(root.rglob("*.ann")):
        doc_id = ann_path.relative_to(root).with_suffix("").as_posix()
        gold_text = Path(gold_dir) / f"{doc_id}.txt"
        doc = read_document(gold_text if gold_text.is_file() else ann_path.with_suffix(".txt"), ann_path)
        documents[doc_id] = dataclasses.replace(doc, doc_id=doc_id)
    return {doc_id: schema.map_document(doc) if schema else doc for doc_id, doc in documents.items()}


def evaluate_directories(
    gold_dir: str | Path, pred_dir: str | Path, schema: TaskSchema | None = None
) -> dict[str, Any]:
    """Score the BRAT files of ``pred_dir`` against ``gold_dir``, both first mapped onto ``schema`` if given; a
    prediction is read with its gold document's text, so ``pred_dir`` may hold ``.ann`` files only."""
    return evaluate_documents(_read(gold_dir, schema), _read_predictions(pred_dir, gold_dir, schema))


def run_evaluate(gold: str, pred: str, schema_name: str | None = None, json_path: str | None = None) -> int:
    """``clinical-prompt evaluate``: print the n2c2 table and optionally write the JSON result.

    Returns 0 on success, 2 when a directory, a BRAT file or the schema cannot be read, or when the
    gold directory holds no document.
    """
    try:
        schema = load_schema(schema_name) if schema_name else None
        result = evaluate_directories(gold, pred, schema)
    except (ValueError, OSError) as err:
        print(f"clinical-prompt: error: {err}", file=sys.stderr)
        return 2
    if not result["documents"]["gold"]:
        print(f"clinical-prompt: error: no BRAT documents in {gold}", file=sys.stderr)
        return 2
    print(format_table(result))
    if json_path:
        write_json(json_path, result)
    return 0
