"""Concept and relation matching for 2018 n2c2 Track 2 style scoring, counted one-to-one.

A concept is reduced to its type and outer character bounds (a discontinuous span counts from its
first start to its last end). Two concepts match when their types are equal and

- ``strict``: their bounds are identical;
- ``lenient``: their bounds overlap by at least one character.

A relation is reduced to its type and its two argument concepts (BRAT order, Arg1 then Arg2); two
relations match when their types are equal and both arguments match under the same mode.

Counting is one-to-one: each gold item and each prediction is matched at most once, true positives
are the size of a maximum matching between predictions and gold under the mode's match rule, false
positives are the unmatched predictions and false negatives the unmatched gold items. This departs
from the official script (``track2_eval.py``), which sets aside a prediction that hits an already
claimed gold item, lets one prediction spanning two gold items claim both, and so can score gold
against itself below 1.0 in lenient mode; here duplicates of one gold item are false positives, a
prediction over two gold items leaves one a false negative, and gold against itself scores 1.0.
"""
from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from typing import Literal, NamedTuple, TypeVar

from clinical_prompt.brat import Document, Entity
from clinical_prompt.evaluation.scores import Counts

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


def _strict_pairs(gold: Sequence[Item], pred: Sequence[Item]) -> dict[int, int]:
    """Strict matching is equality, so pairing equal items in document order is a maximum matching."""
    free: dict[Item, deque[int]] = defaultdict(deque)
    for g, item in enumerate(gold):
        free[item].append(g)
    return {p: free[item].popleft() for p, item in enumerate(pred) if free.get(item)}


def _lenient_candidates(gold: Sequence[Item], pred: Sequence[Item]) -> list[list[int]]:
    """For each prediction, the indices (ascending) of the gold items it matches leniently.

    Gold items are looked up by the start of their anchor concept: one overlapping a prediction's
    anchor starts before that anchor ends and at most ``longest`` characters before it starts.
    """
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


def _augment(start: int, candidates: Sequence[Sequence[int]], owner: dict[int, int]) -> None:
    """Kuhn's step: find an alternating path from unmatched prediction ``start`` to a free gold item
    (depth first, without recursion) and flip it, so one more prediction is matched."""
    visited: set[int] = set()
    stack: list[tuple[int, Iterator[int]]] = [(start, iter(candidates[start]))]
    path: list[int] = []  # path[i]: the gold item that leads from stack[i] to stack[i + 1]
    while stack:
        for g in stack[-1][1]:
            if g in visited:
                continue
            visited.add(g)
            if g not in owner:
                for (p, _), claimed in zip(stack, [*path, g]):
                    owner[claimed] = p
                return
            path.append(g)
            stack.append((owner[g], iter(candidates[owner[g]])))
            break
        else:
            stack.pop()
            if path:
                path.pop()


def maximum_matching(gold: Sequence[Item], pred: Sequence[Item], mode: Mode) -> dict[int, int]:
    """A maximum one-to-one matching of ``pred`` to ``gold`` under ``mode``: prediction index to gold index.

    Deterministic: predictions are taken in order, each first trying the earliest matching free gold
    item; in lenient mode augmenting paths (Kuhn's algorithm) then match every prediction they can.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "strict":
        return _strict_pairs(gold, pred)
    candidates = _lenient_candidates(gold, pred)
    owner: dict[int, int] = {}  # gold index -> prediction index
    for p, options in enumerate(candidates):
        g = next((g for g in options if g not in owner), None)
        if g is not None:
            owner[g] = p
    unmatched = set(range(len(pred))) - set(owner.values())
    for p in sorted(unmatched):
        _augment(p, candidates, owner)
    return {p: g for g, p in sorted(owner.items(), key=lambda pair: pair[1])}


def count_matches(gold: Sequence[Item], pred: Sequence[Item], mode: Mode) -> Counts:
    """True positives (a maximum one-to-one matching), false positives and false negatives of ``pred``."""
    tp = len(maximum_matching(gold, pred, mode))
    return Counts(tp=tp, fp=len(pred) - tp, fn=len(gold) - tp)
