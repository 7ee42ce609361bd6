"""Rule-based sentence splitting for clinical text, with character offsets.

A sentence ends at ``.``, ``!`` or ``?`` (and any closing quotes or brackets) followed by whitespace and a
character that is not a lower-case letter, unless the word before is a known abbreviation (``Dr.``) or
letters joined by periods (``b.i.d.``); at a blank line; at a line break before a list item (``1.``,
``-``, ``*``) or an upper-case heading ending in ``:``; and at a line break after a line ending in ``:``
or an upper-case heading line. Hard-wrapped lines otherwise stay in one sentence. No boundary ever
falls strictly inside a protected span (an entity's outer bounds), so entities are never split.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from clinical_prompt.brat import Document, Relation, Span
from clinical_prompt.corpus.alignment import strip_span

ABBREVIATIONS = frozenset("al approx ca cf dr drs etc fig figs inc jr mr mrs ms prof sr st vs".split())
_LAST_WORD = re.compile(r"(\S+?)\.*$")
_DOTTED = re.compile(r"(?:[a-z]\.)+[a-z]")
_TERMINAL = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s+(\S))")
_LINE_BREAK = re.compile(r"\n")
_NEXT_LINE = re.compile(r"[ \t\r]*(?:\n|\d{1,3}[.)]\s|[-*•]\s|[A-Z][A-Z0-9 /&()-]*:)")


def inside_mask(length: int, spans: Iterable[Span]) -> bytearray:
    """``mask[c] == 1`` when position ``c`` (a cut between ``c - 1`` and ``c``) lies strictly inside a span."""
    mask = bytearray(length + 1)
    for start, end in spans:
        mask[start + 1 : end] = b"\x01" * max(0, end - start - 1)
    return mask


def entity_bounds(doc: Document) -> list[Span]:
    """Outer bounds (first fragment start, last fragment end) of every entity of ``doc``."""
    return [(entity.start, entity.end) for entity in doc.entities.values()]


def _ends_with_abbreviation(text: str, end: int) -> bool:
    match = _LAST_WORD.search(text, max(0, end - 32), end)
    word = match.group(1).lower() if match else ""
    return word in ABBREVIATIONS or _DOTTED.fullmatch(word) is not None


def _candidate_cuts(text: str) -> Iterable[int]:
    for match in _TERMINAL.finditer(text):
        if not match.group(1).islower() and not _ends_with_abbreviation(text, match.start() + 1):
            yield match.end()
    for match in _LINE_BREAK.finditer(text):
        line_start = text.rfind("\n", 0, match.start()) + 1
        line = text[line_start : match.start()].strip()
        if (
            not line
            or line.endswith(":")
            or (line.isupper() and len(line) > 1)
            or _NEXT_LINE.match(text, match.end())
        ):
            yield match.start()


def split_sentences(text: str, protected: Iterable[Span] = ()) -> list[Span]:
    """Sentence ``(start, end)`` offsets (end exclusive, whitespace trimmed) covering all non-blank text.

    No boundary falls strictly inside a ``protected`` span.
    """
    blocked = inside_mask(len(text), protected)
    cuts = sorted({cut for cut in _candidate_cuts(text) if not blocked[cut]})
    spans = (strip_span(text, start, end) for start, end in zip([0, *cuts], [*cuts, len(text)]))
    return [(start, end) for start, end in spans if start < end]


def sentence_documents(doc: Document) -> list[Document]:
    """One Document per sentence of ``doc`` (id ``"{doc_id}@{start}"``), with the entities inside it
    shifted to sentence offsets and the relations whose two arguments both lie inside it."""
    parts = []
    for start, end in split_sentences(doc.text, entity_bounds(doc)):
        entities = {
            key: replace(e, spans=tuple((s - start, t - start) for s, t in e.spans))
            for key, e in doc.entities.items()
            if start <= e.start and e.end <= end
        }
        relations: dict[str, Relation] = {
            key: r for key, r in doc.relations.items() if r.arg1 in entities and r.arg2 in entities
        }
        parts.append(Document(f"{doc.doc_id}@{start}", doc.text[start:end], entities, relations))
    return parts
