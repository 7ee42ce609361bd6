"""Windows: runs of whole sentences that fit a token budget, with char offsets and token ranges.

A sentence longer than the budget is cut into pieces at token boundaries outside entities, at a
whitespace gap where one is in reach (else inside a word, e.g. between ``10`` and ``##mg``); only an
entity longer than the whole budget is ever cut.
"""
from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from clinical_prompt.brat import Document, Span
from clinical_prompt.corpus.alignment import TokenizedText
from clinical_prompt.corpus.sentences import entity_bounds, inside_mask, split_sentences


@dataclass(frozen=True)
class Window:
    """Char offsets ``[start, end)`` of a stretch of a document and its tokens ``[token_start, token_end)``."""

    start: int
    end: int
    token_start: int
    token_end: int

    @property
    def num_tokens(self) -> int:
        return self.token_end - self.token_start

    def contains(self, start: int, end: int) -> bool:
        """Whether the char span ``[start, end)`` lies inside this window."""
        return self.start <= start and end <= self.end


def _cut(tokens: TokenizedText, begin: int, limit: int, blocked: bytearray) -> int:
    """The last cut ``c`` in ``(begin, limit]`` (between tokens ``c - 1`` and ``c``) outside protected spans,
    at whitespace if possible; ``limit`` when every cut would split a protected span."""
    offsets = tokens.offsets
    safe = [c for c in range(limit, begin, -1) if not blocked[offsets[c][0]]]
    at_space = [c for c in safe if offsets[c - 1][1] < offsets[c][0]]
    return (at_space or safe or [limit])[0]


def sentence_units(
    tokens: TokenizedText, sentences: Sequence[Span], max_tokens: int, protected: Sequence[Span] = ()
) -> list[Window]:
    """One window per sentence that has tokens; sentences over ``max_tokens`` are cut into pieces."""
    if max_tokens < 1:
        raise ValueError(f"token budget must be at least 1, got {max_tokens}")
    length = max([end for _, end in protected] + [end for _, end in tokens.offsets[-1:]] + [0])
    blocked = inside_mask(length, protected)
    units = []
    for start, end in sentences:
        begin, stop = tokens.token_range(start, end)
        while stop - begin > max_tokens:
            cut = _cut(tokens, begin, begin + max_tokens, blocked)
            units.append(Window(start, tokens.offsets[cut - 1][1], begin, cut))
            begin, start = cut, tokens.offsets[cut][0]
        if begin < stop:
            units.append(Window(start, end, begin, stop))
    return units


def document_units(doc: Document, tokens: TokenizedText, max_tokens: int) -> list[Window]:
    """Sentence units of ``doc`` (see :func:`sentence_units`), never splitting an entity's outer bounds."""
    protected = entity_bounds(doc)
    return sentence_units(tokens, split_sentences(doc.text, protected), max_tokens, protected)


def _merge(units: Sequence[Window]) -> Window:
    return Window(units[0].start, units[-1].end, units[0].token_start, units[-1].token_end)


def pack_windows(units: Sequence[Window], max_tokens: int) -> list[Window]:
    """Greedily pack consecutive units into windows of at most ``max_tokens`` tokens."""
    windows: list[Window] = []
    group: list[Window] = []
    for unit in units:
        if group and unit.token_end - group[0].token_start > max_tokens:
            windows.append(_merge(group))
            group = []
        group.append(unit)
    if group:
        windows.append(_merge(group))
    return windows


def window_around(units: Sequence[Window], index: int, max_tokens: int, neighbours: int) -> Window:
    """Unit ``index`` widened by up to ``neighbours`` units on each side, nearest first, within ``max_tokens``."""
    low = high = index
    for _ in range(neighbours):
        if low > 0 and units[high].token_end - units[low - 1].token_start <= max_tokens:
            low -= 1
        if high + 1 < len(units) and units[high + 1].token_end - units[low].token_start <= max_tokens:
            high += 1
    return _merge(units[low : high + 1])


def unit_index(units: Sequence[Window], position: int) -> int:
    """Index of the unit holding char ``position`` (the last unit starting at or before it)."""
    return max(0, bisect_right(units, position, key=lambda unit: unit.start) - 1)
