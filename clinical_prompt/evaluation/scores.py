"""Counts to precision, recall and F1, and their micro and document-level macro aggregates.

Zero division gives 0.0, as in the official n2c2 script: precision is 0.0 without predictions,
recall is 0.0 without gold items, F1 is 0.0 when both are 0.0. The document-level macro average is,
as in the official script, the mean over every scored document, so a document with neither gold items
nor predictions of the kind scored counts 0.0: gold scored against itself gives a macro below 1.0
when some documents have nothing of that kind.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


@dataclass(frozen=True)
class Counts:
    """True positives, false positives and false negatives, with the scores they give."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def to_dict(self) -> dict[str, float | int]:
        """``{"precision", "recall", "f1", "tp", "fp", "fn"}``."""
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1,
                "tp": self.tp, "fp": self.fp, "fn": self.fn}


def micro(counts: Iterable[Counts]) -> Counts:
    """Pooled counts."""
    return sum(counts, Counts())


def macro(per_document: Sequence[Counts]) -> dict[str, float]:
    """Mean over all documents of each one's precision, recall and F1 (0.0 for no document)."""
    n = len(per_document)
    return {
        "precision": _ratio(sum(c.precision for c in per_document), n),
        "recall": _ratio(sum(c.recall for c in per_document), n),
        "f1": _ratio(sum(c.f1 for c in per_document), n),
    }
