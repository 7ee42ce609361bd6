"""What is scored and when two scored items match, for 2018 n2c2 Track 2 style scoring.

A concept is reduced to its type and outer character bounds (a discontinuous span counts from its
first start to its last end). Two concepts match when their types are equal and

- ``strict``: their bounds are identical;
- ``lenient``: their bounds overlap by at least one character.

A relation is reduced to its type and its two argument concepts (BRAT order, Arg1 then Arg2); two
relations match when their types are equal and both arguments match under the same mode.

How matches become true and false positives is :mod:`clinical_prompt.evaluation.counting`.
"""
from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal, NamedTuple, TypeVar

from clinical_prompt.brat import Document, Entity

Mode = Literal["strict", "lenient"]
MODES: tuple[Mode, ...] = ("strict", "lenient")


class Concept(NamedTuple):
    """A concept as scored: its type and outer bounds (start inclusive, end exclusive)."""

    type: str
    start: int
    end: int


class RelationMention(NamedTuple):
    """A relation as scored: its type and its Arg1 and Arg2 concepts."""

    type: str
    arg1: Concept
    arg2: Concept


Item = TypeVar("Item", Concept, RelationMention)


def concept_of(entity: Entity) -> Concept:
    """The scored form of an entity: discontinuous spans collapse to their outer bounds."""
    return Concept(entity.type, min(s for s, _ in entity.spans), max(e for _, e in entity.spans))


def concepts(doc: Document) -> list[Concept]:
    """Every entity of ``doc`` in document order."""
    return [concept_of(entity) for entity in doc.entities.values()]


def relations(doc: Document) -> list[RelationMention]:
    """Every relation of ``doc`` in document order; an event argument stands for its trigger.

    Raises ``ValueError`` (naming the document, relation and argument ids) for an argument that is
    neither an entity nor an event of ``doc``.
    """

    def argument(relation_id: str, arg_id: str) -> Concept:
        target = doc.events[arg_id].trigger if arg_id in doc.events else arg_id
        if target not in doc.entities:
            raise ValueError(f"{doc.doc_id}: relation {relation_id} refers to unknown annotation {arg_id}")
        return concept_of(doc.entities[target])

    return [
        RelationMention(rel.type, argument(rel.id, rel.arg1), argument(rel.id, rel.arg2))
        for rel in doc.relations.values()
    ]


def concepts_match(gold: Concept, pred: Concept, mode: Mode) -> bool:
    """Whether two concepts match: same type, and identical (strict) or overlapping (lenient) bounds."""
    if gold.type != pred.type:
        return False
    if mode == "strict":
        return (gold.start, gold.end) == (pred.start, pred.end)
    if mode == "lenient":
        return gold.start < pred.end and pred.start < gold.end
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def relations_match(gold: RelationMention, pred: RelationMention, mode: Mode) -> bool:
    """Whether two relations match: same type, and Arg1 and Arg2 each match under ``mode``."""
    return (
        gold.type == pred.type
        and concepts_match(gold.arg1, pred.arg1, mode)
        and concepts_match(gold.arg2, pred.arg2, mode)
    )


def items_match(gold: Item, pred: Item, mode: Mode) -> bool:
    """:func:`concepts_match` or :func:`relations_match`, whichever fits the items."""
    if isinstance(gold, RelationMention):
        return relations_match(gold, pred, mode)
    return concepts_match(gold, pred, mode)


def _anchor(item: Concept | RelationMention) -> Concept:
    """The concept whose bounds locate ``item``: itself, or a relation's Arg1."""
    return item.arg1 if isinstance(item, RelationMention) else item


def _strict_candidates(gold: Sequence[Item], pred: Sequence[Item]) -> list[list[int]]:
    """Strict matching is equality: each prediction's candidates are the gold items equal to it."""
    equal: dict[Item, list[int]] = defaultdict(list)
    for g, item in enumerate(gold):
        equal[item].append(g)
    return [list(equal.get(item, ())) for item in pred]


def _lenient_candidates(gold: Sequence[Item], pred: Sequence[Item]) -> list[list[int]]:
    """Gold items are looked up by the start of their anchor concept: one overlapping a prediction's
    anchor starts before that anchor ends and at most ``longest`` characters before it starts."""
    anchors = [_anchor(item) for item in gold]
    order = sorted(range(len(gold)), key=lambda g: anchors[g].start)
    starts = [anchors[g].start for g in order]
    longest = max((a.end - a.start for a in anchors), default=0)
    candidates = []
    for item in pred:
        anchor = _anchor(item)
        window = order[bisect_left(starts, anchor.start - longest + 1) : bisect_left(starts, anchor.end)]
        candidates.append(sorted(g for g in window if items_match(gold[g], item, "lenient")))
    return candidates


def candidates(gold: Sequence[Item], pred: Sequence[Item], mode: Mode) -> list[list[int]]:
    """For each prediction, the indices (ascending) of the gold items it matches under ``mode``."""
    if mode == "strict":
        return _strict_candidates(gold, pred)
    if mode == "lenient":
        return _lenient_candidates(gold, pred)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
