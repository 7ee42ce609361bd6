"""2018 n2c2 Track 2 scoring of documents and BRAT directories (strict and lenient, concepts and relations).

The result is a JSON-ready dict::

    {"matching": "official",
     "concepts": {"strict": {"micro": {precision, recall, f1, tp, fp, fn},
                             "macro": {precision, recall, f1},
                             "per_type": {TYPE: {precision, recall, f1, tp, fp, fn}}},
                  "lenient": {...}},
     "relations": {...same shape...},
     "documents": {"gold": n, "pred": n, "scored": n, "missing": "skip",
                   "missing_pred": [ids], "missing_gold": [ids]},
     "schema": {"name": NAME, "dropped": {"gold": {"concepts": {REASON: n}, "relations": {REASON: n}},
                                          "pred": {...}}}}

``schema`` is there only when the documents were mapped onto a schema (:func:`evaluate_directories`);
it counts, per side and kind, the items the mapping left out of the scored documents and why
(:data:`clinical_prompt.schema.DROP_REASONS`).

Matching is that of :mod:`clinical_prompt.evaluation.matching` and counting that of
:mod:`clinical_prompt.evaluation.counting` (``matching="official"`` by default, or ``"one-to-one"``),
applied to each type on its own; micro pools the counts, macro is the mean of the per-document scores
over every scored document (:mod:`clinical_prompt.evaluation.scores`).

Documents present on one side only: ``missing="skip"`` (the default, as the official script) scores
only the documents of both sides and logs a warning naming the others; ``missing="empty"`` scores
them too, a missing prediction as no prediction (its gold items are false negatives) and a missing
gold file as no gold item (its predictions are false positives). The lists name them either way.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from clinical_prompt.atomic import write_json
from clinical_prompt.brat import Document, read_corpus, read_document
from clinical_prompt.evaluation.counting import COUNTINGS, Matching
from clinical_prompt.evaluation.matching import MODES, Item, Mode, concepts, relations
from clinical_prompt.evaluation.report import format_table
from clinical_prompt.evaluation.scores import Counts, macro, micro
from clinical_prompt.schema import DROP_REASONS, TaskSchema, load_schema

Missing = Literal["skip", "empty"]
MISSING: tuple[Missing, ...] = ("skip", "empty")
_KINDS: dict[str, Callable[[Document], list[Any]]] = {"concepts": concepts, "relations": relations}
_NAMED = 10  # documents named in a warning; the JSON lists them all

logger = logging.getLogger(__name__)


def scored_ids(gold: Mapping[str, Any], pred: Mapping[str, Any], missing: Missing) -> list[str]:
    """The ids of the documents scored: those of both sides (``skip``) or of either side (``empty``)."""
    if missing not in MISSING:
        raise ValueError(f"missing must be one of {MISSING}, got {missing!r}")
    return sorted(set(gold) & set(pred) if missing == "skip" else set(gold) | set(pred))


def _count_per_type(gold: Sequence[Item], pred: Sequence[Item], mode: Mode, matching: Matching) -> dict[str, Counts]:
    by_type: dict[str, tuple[list[Item], list[Item]]] = defaultdict(lambda: ([], []))
    for side, items in enumerate((gold, pred)):
        for item in items:
            by_type[item.type][side].append(item)
    count = COUNTINGS[matching]
    return {t: count(*by_type[t], mode) for t in sorted(by_type)}


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


def _warn_skipped(ids: Sequence[str], what: str) -> None:
    if ids:
        named = ", ".join(ids[:_NAMED]) + (f" and {len(ids) - _NAMED} more" if len(ids) > _NAMED else "")
        logger.warning("documents %s, not scored (%d): %s", what, len(ids), named)


def evaluate_documents(
    gold: Mapping[str, Document],
    pred: Mapping[str, Document],
    *,
    matching: Matching = "official",
    missing: Missing = "skip",
) -> dict[str, Any]:
    """Score ``pred`` against ``gold`` (both keyed by document id); see the module doc for the result,
    ``matching`` and ``missing``."""
    if matching not in COUNTINGS:
        raise ValueError(f"matching must be one of {tuple(COUNTINGS)}, got {matching!r}")
    doc_ids = scored_ids(gold, pred, missing)
    missing_pred, missing_gold = sorted(set(gold) - set(pred)), sorted(set(pred) - set(gold))
    if missing == "skip":
        _warn_skipped(missing_pred, "without prediction")
        _warn_skipped(missing_gold, "without gold")
    result: dict[str, Any] = {"matching": matching}
    for kind, extract in _KINDS.items():
        pairs = [
            (extract(gold[d]) if d in gold else [], extract(pred[d]) if d in pred else [])
            for d in doc_ids
        ]
        result[kind] = {
            mode: _aggregate([_count_per_type(g, p, mode, matching) for g, p in pairs]) for mode in MODES
        }
    result["documents"] = {
        "gold": len(gold),
        "pred": len(pred),
        "scored": len(doc_ids),
        "missing": missing,
        "missing_pred": missing_pred,
        "missing_gold": missing_gold,
    }
    return result


def _mapped(
    documents: Iterable[Document], schema: TaskSchema | None
) -> tuple[dict[str, Document], dict[str, Counter]]:
    """``documents`` by id, mapped onto ``schema`` if given, and what mapping dropped from each."""
    mapped, dropped = {}, {}
    for doc in documents:
        mapped[doc.doc_id], dropped[doc.doc_id] = schema.map_with_drops(doc) if schema else (doc, Counter())
    return mapped, dropped


def _dropped(per_document: Mapping[str, Counter], doc_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """``{"concepts": {reason: n}, "relations": {reason: n}}`` summed over ``doc_ids``."""
    total: Counter = sum((per_document[d] for d in doc_ids if d in per_document), Counter())
    return {kind: {reason: total[kind, reason] for reason in DROP_REASONS if total[kind, reason]} for kind in _KINDS}


def _read_predictions(pred_dir: str | Path, gold_dir: str | Path) -> list[Document]:
    """The ``.ann`` files under ``pred_dir`` (recursively), each read with the text of its gold document (the
    ``.txt`` beside it where gold has none): a folder written by ``clinical-prompt extract`` holds ``.ann`` files
    only."""
    root = Path(pred_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"not a directory: {root}")
    documents = []
    for ann_path in sorted(root.rglob("*.ann")):
        doc_id = ann_path.relative_to(root).with_suffix("").as_posix()
        gold_text = Path(gold_dir) / f"{doc_id}.txt"
        doc = read_document(gold_text if gold_text.is_file() else ann_path.with_suffix(".txt"), ann_path)
        documents.append(dataclasses.replace(doc, doc_id=doc_id))
    return documents


def evaluate_directories(
    gold_dir: str | Path,
    pred_dir: str | Path,
    schema: TaskSchema | None = None,
    *,
    matching: Matching = "official",
    missing: Missing = "skip",
) -> dict[str, Any]:
    """Score the BRAT files of ``pred_dir`` against ``gold_dir``, both first mapped onto ``schema`` if given
    (the result then counts what the mapping dropped); ``matching`` and ``missing`` as in
    :func:`evaluate_documents`. A prediction is read with its gold document's text, so ``pred_dir`` may hold
    ``.ann`` files only."""
    gold, gold_dropped = _mapped(read_corpus(gold_dir).documents, schema)
    pred, pred_dropped = _mapped(_read_predictions(pred_dir, gold_dir), schema)
    result = evaluate_documents(gold, pred, matching=matching, missing=missing)
    if schema is not None:
        doc_ids = scored_ids(gold, pred, missing)
        result["schema"] = {
            "name": schema.name,
            "dropped": {"gold": _dropped(gold_dropped, doc_ids), "pred": _dropped(pred_dropped, doc_ids)},
        }
    return result


def run_evaluate(
    gold: str,
    pred: str,
    schema_name: str | None = None,
    json_path: str | None = None,
    *,
    matching: Matching = "official",
    missing: Missing = "skip",
) -> int:
    """``clinical-prompt evaluate``: print the n2c2 table and optionally write the JSON result.

    Returns 0 on success, 2 when a directory, a BRAT file or the schema cannot be read, when the gold
    directory holds no document, or when no document is scored.
    """
    try:
        schema = load_schema(schema_name) if schema_name else None
        result = evaluate_directories(gold, pred, schema, matching=matching, missing=missing)
    except (ValueError, OSError) as err:
        print(f"clinical-prompt: error: {err}", file=sys.stderr)
        return 2
    documents = result["documents"]
    if not documents["gold"]:
        print(f"clinical-prompt: error: no BRAT documents in {gold}", file=sys.stderr)
        return 2
    if not documents["scored"]:
        print(f"clinical-prompt: error: no document of {gold} has a prediction in {pred} "
              "(--missing-as-empty scores them as misses)", file=sys.stderr)
        return 2
    print(format_table(result))
    if json_path:
        write_json(json_path, result)
    return 0
