"""Alignment between character spans and tokens through a fast tokenizer's ``offset_mapping``.

Conventions: a char span is ``(start, end)`` in code points, end exclusive (as in BRAT); a token span is
``(first, last)`` token indices, both inclusive (as MRC start/end labels). A discontinuous entity is
aligned by its outer bounds (first fragment start, last fragment end), as n2c2 scoring collapses
discontinuous spans. A span whose boundary falls strictly inside a token or between tokens is snapped
outward to the tokens it overlaps; decoding such a span cannot give the exact gold offsets back.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from clinical_prompt.brat import Span

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TokenSpan = tuple[int, int]

OUTSIDE = "O"


def strip_span(text: str, start: int, end: int) -> Span:
    """``[start, end)`` without the whitespace at its edges (empty when all of it is whitespace)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def token_span_to_char_span(offsets: Sequence[Sequence[int]], first: int, last: int) -> Span:
    """Char span covered by tokens ``first..last`` (inclusive)."""
    return offsets[first][0], offsets[last][1]


def inside_word(text: str, position: int) -> bool:
    """Whether ``position`` (a cut before ``text[position]``) falls between two letters or digits."""
    return 0 < position < len(text) and text[position - 1].isalnum() and text[position].isalnum()


def snap_to_words(text: str, start: int, end: int) -> Span:
    """``[start, end)`` widened to whole words: an end that cuts a word (see :func:`inside_word`) moves to its edge,
    so ``war`` of ``warfarin`` becomes ``warfarin`` (``10mg`` is one word, ``beta-blockers`` two)."""
    while inside_word(text, start):
        start -= 1
    while inside_word(text, end):
        end += 1
    return start, end


@dataclass(frozen=True)
class TokenizedText:
    """Token ids of a whole text (no special tokens) with each token's char offsets, whitespace trimmed."""

    input_ids: tuple[int, ...]
    offsets: tuple[Span, ...]

    @cached_property
    def _starts(self) -> list[int]:
        return [start for start, _ in self.offsets]

    @cached_property
    def _ends(self) -> list[int]:
        return [end for _, end in self.offsets]

    def overlapping(self, start: int, end: int) -> TokenSpan | None:
        """The first and last non-empty token overlapping ``[start, end)``; None when no token does."""
        first = bisect_right(self._ends, start)
        while first < len(self.offsets) and self.offsets[first][0] == self.offsets[first][1]:
            first += 1
        last = bisect_left(self._starts, end) - 1
        return (first, last) if first <= last else None

    def boundary_problem(self, start: int, end: int) -> str | None:
        """Why ``[start, end)`` cannot be decoded exactly from tokens, or None when both boundaries are
        token boundaries: ``"no_tokens"``, ``"boundary_inside_token"`` or ``"boundary_between_tokens"``
        (whitespace or characters the tokenizer drops at the edge of the span)."""
        span = self.overlapping(start, end)
        if span is None:
            return "no_tokens"
        first_start, last_end = token_span_to_char_span(self.offsets, *span)
        if first_start < start or last_end > end:
            return "boundary_inside_token"
        if first_start > start or last_end < end:
            return "boundary_between_tokens"
        return None

    def token_range(self, start: int, end: int) -> tuple[int, int]:
        """``[first, stop)`` slice of the tokens that start inside ``[start, end)``."""
        return bisect_left(self._starts, start), bisect_left(self._starts, end)


def tokenize_text(text: str, tokenizer: PreTrainedTokenizerBase) -> TokenizedText:
    """Tokenize ``text`` once with a fast tokenizer; offsets are trimmed of surrounding whitespace."""
    encoding = tokenizer(
        text,
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    offsets = tuple(strip_span(text, start, end) for start, end in encoding["offset_mapping"])
    return TokenizedText(tuple(encoding["input_ids"]), offsets)


def bio_tags(length: int, spans: Iterable[tuple[int, int, str]]) -> list[str]:
    """BIO tags over ``length`` tokens for ``(first, last, type)`` token spans.

    Overlapping spans cannot all be tagged: earlier starts win, then longer spans; a span overlapping
    one already tagged is left out.
    """
    tags = [OUTSIDE] * length
    for first, last, label in sorted(spans, key=lambda s: (s[0], s[0] - s[1])):
        if all(tag == OUTSIDE for tag in tags[first : last + 1]):
            tags[first] = f"B-{label}"
            tags[first + 1 : last + 1] = [f"I-{label}"] * (last - first)
    return tags


def decode_bio(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """``(first, last, type)`` token spans from BIO tags; an ``I-`` tag that does not continue a span of
    its type starts one."""
    spans: list[tuple[int, int, str]] = []
    for index, tag in enumerate(tags):
        prefix, _, label = tag.partition("-")
        if prefix == "I" and spans and spans[-1][1] == index - 1 and spans[-1][2] == label:
            spans[-1] = (spans[-1][0], index, label)
        elif prefix in ("B", "I"):
            spans.append((index, index, label))
    return spans


def decode_start_end(
    starts: Sequence[int], ends: Sequence[int], match: Collection[TokenSpan] | None = None
) -> list[TokenSpan]:
    """Token spans from MRC start/end flags (1 = on): every start/end pair in ``match`` when given,
    otherwise each start with the nearest end at or after it (flat decoding)."""
    start_positions = [i for i, flag in enumerate(starts) if flag == 1]
    end_positions = [i for i, flag in enumerate(ends) if flag == 1]
    if match is not None:
        return [(s, e) for s in start_positions for e in end_positions if s <= e and (s, e) in match]
    spans = []
    for s in start_positions:
        after = bisect_left(end_positions, s)
        if after < len(end_positions):
            spans.append((s, end_positions[after]))
    return spans
