"""From matches to true positives, false positives and false negatives: the two counting rules.

Both take the gold items and the predictions of one document (and one type), in file order, and the
match rule of a mode (:mod:`clinical_prompt.evaluation.matching`).

``official`` (:func:`count_official`, the default) counts as the 2018 n2c2 Track 2 script
``Track2-evaluate-ver4.py`` does. ``one-to-one`` (:func:`count_one_to_one`) counts a maximum
one-to-one matching: stricter, and gold scored against itself always gives 1.0.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Literal

from clinical_prompt.evaluation.matching import Item, Mode, candidates
from clinical_prompt.evaluation.scores import Counts

Matching = Literal["official", "one-to-one"]


def count_official(gold: Sequence[Item], pred: Sequence[Item], mode: Mode) -> Counts:
    """Counts as the official script gives them.

    Predictions are taken in file order. Each one claims every gold item it matches. A prediction
    that matches a gold item claimed before it (by an earlier prediction, kept or not) is set aside:
    it is neither a true nor a false positive, though the free gold items it matches are claimed
    all the same.
    Of the predictions kept, TP is the number that match any gold item and FP the number that
    match none; FN = number of gold items - TP. So TP counts predictions, not gold items: in
    lenient mode one prediction over two gold items is one TP and leaves one FN, and a later
    prediction on the second item is set aside. Precision = TP / (TP + FP), TP + FP being the
    predictions kept; recall = TP / (TP + FN) = TP / number of gold items.
    """
    claimed: set[int] = set()
    tp = fp = 0
    for matched in candidates(gold, pred, mode):
        set_aside = not claimed.isdisjoint(matched)
        claimed.update(matched)
        if set_aside:
            continue
        if matched:
            tp += 1
        else:
            fp += 1
    return Counts(tp=tp, fp=fp, fn=len(gold) - tp)


def _augment(start: int, options: Sequence[Sequence[int]], owner: dict[int, int]) -> None:
    """Kuhn's step: find an alternating path from unmatched prediction ``start`` to a free gold item
    (depth first, without recursion) and flip it, so one more prediction is matched."""
    visited: set[int] = set()
    stack: list[tuple[int, Iterator[int]]] = [(start, iter(options[start]))]
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
            stack.append((owner[g], iter(options[owner[g]])))
            break
        else:
            stack.pop()
            if path:
                path.pop()


def maximum_matching(gold: Sequence[Item], pred: Sequence[Item], mode: Mode) -> dict[int, int]:
    """A maximum one-to-one matching of ``pred`` to ``gold`` under ``mode``: prediction index to gold index.

    Deterministic: predictions are taken in order, each first trying the earliest matching free gold
    item; augmenting paths (Kuhn's algorithm) then match every prediction they can.
    """
    options = candidates(gold, pred, mode)
    owner: dict[int, int] = {}  # gold index -> prediction index
    for p, matched in enumerate(options):
        g = next((g for g in matched if g not in owner), None)
        if g is not None:
            owner[g] = p
    unmatched = set(range(len(pred))) - set(owner.values())
    for p in sorted(unmatched):
        _augment(p, options, owner)
    return {p: g for g, p in sorted(owner.items(), key=lambda pair: pair[1])}


def count_one_to_one(gold: Sequence[Item], pred: Sequence[Item], mode: Mode) -> Counts:
    """Each gold item and each prediction is matched at most once: TP is the size of a maximum matching,
    FP the unmatched predictions (duplicates of one gold item included), FN the unmatched gold items."""
    tp = len(maximum_matching(gold, pred, mode))
    return Counts(tp=tp, fp=len(pred) - tp, fn=len(gold) - tp)


COUNTINGS: dict[str, Callable[[Sequence[Item], Sequence[Item], Mode], Counts]] = {
    "official": count_official,
    "one-to-one": count_one_to_one,
}
