"""Task heads over encoder hidden states aligned with the text tokens."""
from clinical_prompt.heads.pair import NO_RELATION, PairClassifierHead, PairHeadOutput, pair_labels
from clinical_prompt.heads.span import (
    SpanHead,
    SpanHeadOutput,
    boundary_masks,
    candidate_pairs,
    decode_spans,
    pad_span_labels,
)
from clinical_prompt.heads.tagging import IGNORE_INDEX, TaggingHead, TaggingHeadOutput, decode_bio

__all__ = [
    "IGNORE_INDEX",
    "NO_RELATION",
    "PairClassifierHead",
    "PairHeadOutput",
    "SpanHead",
    "SpanHeadOutput",
    "TaggingHead",
    "TaggingHeadOutput",
    "boundary_masks",
    "candidate_pairs",
    "decode_bio",
    "decode_spans",
    "pad_span_labels",
    "pair_labels",
]
