"""MRC extraction (Peng et al. 2024): concepts and relations as span questions to one shared span head.

:mod:`~clinical_prompt.extractors.mrc.settings` (what a row holds and how spans decode),
:mod:`~clinical_prompt.extractors.mrc.questions` (query types, prompt blocks, word masks),
:mod:`~clinical_prompt.extractors.mrc.extractor` (:class:`MrcExtractor`: training, inference, saving),
:mod:`~clinical_prompt.extractors.mrc.saved` (the saved layout, read back and checked).
"""
from clinical_prompt.extractors.mrc.extractor import (
    HardPromptEncoder,
    MrcExtractor,
    predictions_for,
    predictions_with_entities,
)
from clinical_prompt.extractors.mrc.questions import (
    mrc_prompt_config,
    prompt_block_names,
    query_texts,
    query_types,
    sample_negatives,
)
from clinical_prompt.extractors.mrc.settings import (
    DEFAULT_VIRTUAL_TOKENS,
    KIND,
    PROMPT_SHARING,
    RELATION_TAILS,
    SHARED_BLOCK,
    THRESHOLD_GRID,
    MrcSettings,
    ScoredSpan,
    span_head,
)

__all__ = [
    "DEFAULT_VIRTUAL_TOKENS",
    "KIND",
    "PROMPT_SHARING",
    "RELATION_TAILS",
    "SHARED_BLOCK",
    "THRESHOLD_GRID",
    "HardPromptEncoder",
    "MrcExtractor",
    "MrcSettings",
    "ScoredSpan",
    "mrc_prompt_config",
    "predictions_for",
    "predictions_with_entities",
    "prompt_block_names",
    "query_texts",
    "query_types",
    "sample_negatives",
    "span_head",
]
