"""Settings of an MRC extractor: row building and decoding (:class:`MrcSettings`), the span head they shape, and
the constants the other MRC modules share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clinical_prompt.corpus.examples import HeadMarking
from clinical_prompt.heads.span import DECODING_MODES, SpanHead

KIND = "mrc"
ScoredSpan = tuple[int, int, float]  # document characters [start, end) and the span's score
DEFAULT_VIRTUAL_TOKENS = 16
THRESHOLD_GRID = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
PROMPT_SHARING = ("per-type", "shared")
RELATION_TAILS = ("spans", "entities")
SHARED_BLOCK = "shared"


@dataclass(frozen=True)
class MrcSettings:
    """Row building and decoding settings of an MRC extractor (saved in ``extractor.json``).

    ``max_length``: tokens per row, prompt and query included. ``head_marking``: how soft-prompt relation rows show
    the head. ``neighbours``: sentences on each side of the head's sentence in a relation context. ``decoding``:
    ``"flat"``, ``"scored"`` or ``"nested"`` (see :func:`~clinical_prompt.heads.span.decode_spans`) of concept rows,
    ``relation_decoding`` of relation rows (``None``: ``decoding``); ``threshold`` on start, end and match
    probabilities of concept rows, ``relation_threshold`` of relation rows (``None``: ``threshold``);
    ``relation_tails``: a relation question's answers are the spans it decodes (``"spans"``) or the entities of a
    tail type already found in its context, each scored by the question's start probability at its first token and
    end probability at its last (``"entities"``: concept questions, trained on every mention, fix the boundaries;
    the relation question only links);
    ``max_span_len`` in tokens (``None``: unbounded). ``head_dropout``, ``match_floor`` and ``positive_weight``: the
    span head's (see :class:`~clinical_prompt.heads.span.SpanHead`).
    ``negative_ratio``: training keeps at most this many concept rows without a gold span per row with one
    (``None``: all). ``prompt_sharing`` (soft prompts): ``"per-type"``, one prompt block per query type in place of
    the query, or ``"shared"``, one block for every query, the rows keeping the hard query so the type stays known.
    """

    max_length: int = 256
    head_marking: HeadMarking = "markers"
    neighbours: int = 1
    decoding: Literal["flat", "scored", "nested"] = "flat"
    relation_decoding: Literal["flat", "scored", "nested"] | None = None
    threshold: float = 0.5
    relation_threshold: float | None = None
    relation_tails: Literal["spans", "entities"] = "entities"
    max_span_len: int | None = 32
    head_dropout: float = 0.3
    match_floor: float = 0.05
    positive_weight: float = 3.0
    negative_ratio: float | None = None
    prompt_sharing: Literal["per-type", "shared"] = "per-type"

    def __post_init__(self) -> None:
        if self.head_marking not in ("markers", "segment"):
            raise ValueError(f"head_marking must be 'markers' or 'segment', got {self.head_marking!r}")
        if self.neighbours < 0:
            raise ValueError(f"neighbours must be >= 0, got {self.neighbours}")
        if self.relation_tails not in RELATION_TAILS:
            raise ValueError(f"relation_tails must be 'spans' or 'entities', got {self.relation_tails!r}")
        for name in ("decoding", "relation_decoding"):
            value = getattr(self, name)
            if value not in DECODING_MODES and (name == "decoding" or value is not None):
                raise ValueError(f"{name} must be one of {', '.join(DECODING_MODES)}, got {value!r}")
        for name in ("threshold", "relation_threshold"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        if self.max_span_len is not None and self.max_span_len < 1:
            raise ValueError(f"max_span_len must be >= 1 or None, got {self.max_span_len}")
        if not 0.0 <= self.head_dropout < 1.0:
            raise ValueError(f"head_dropout must be in [0, 1), got {self.head_dropout}")
        if self.negative_ratio is not None and self.negative_ratio < 0:
            raise ValueError(f"negative_ratio must be >= 0 or None, got {self.negative_ratio}")
        if self.prompt_sharing not in PROMPT_SHARING:
            raise ValueError(f"prompt_sharing must be 'per-type' or 'shared', got {self.prompt_sharing!r}")


def span_head(hidden_size: int, settings: MrcSettings) -> SpanHead:
    """A new span head for encoder states of ``hidden_size``, shaped and trained as ``settings`` say."""
    return SpanHead(hidden_size, settings.head_dropout, max_span_len=settings.max_span_len,
                    match_floor=settings.match_floor, positive_weight=settings.positive_weight)
