"""The questions an MRC extractor asks: query types and their prompt blocks, word masks of the rows, sampling of
the rows without an answer.

Spans start and end only on word boundaries: a token starts (ends) a word unless the characters on both sides of its
start (end) are letters or digits, so ``10mg`` is one word.
"""
from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence

from clinical_prompt.brat import Document, Span
from clinical_prompt.corpus import RelationRow
from clinical_prompt.corpus.alignment import inside_word
from clinical_prompt.extractors.base import EntityKey
from clinical_prompt.extractors.mrc.settings import DEFAULT_VIRTUAL_TOKENS, SHARED_BLOCK
from clinical_prompt.prompts import ClinicalPromptConfig
from clinical_prompt.schema import TaskSchema


class RelationQuestion(RelationRow):
    """A relation row asked about a predicted entity: the head's key, and the spans of the entities of a tail type
    inside the context (the answers when ``relation_tails="entities"``)."""

    head: EntityKey
    candidates: list[Span]


def sample_negatives(rows: Sequence[dict], ratio: float, seed: int = 0) -> list[dict]:
    """Every row with a gold span, and at most ``ceil(ratio x that count)`` rows without one, drawn with ``seed``;
    row order is kept."""
    negatives = [i for i, row in enumerate(rows) if not row["span_labels"]]
    keep = min(len(negatives), math.ceil(ratio * (len(rows) - len(negatives))))
    dropped = set(negatives) - set(random.Random(seed).sample(negatives, keep))
    return [row for i, row in enumerate(rows) if i not in dropped]


def query_types(schema: TaskSchema) -> list[str]:
    """The MRC question types in ``prompt_id`` order: concept types, then relation types."""
    return [*schema.concept_names, *schema.relation_names]


def prompt_block_names(schema: TaskSchema, sharing: str = "per-type") -> list[str]:
    """The prompt blocks of ``schema``: one per query type (``"per-type"``) or the one ``"shared"`` block."""
    return [SHARED_BLOCK] if sharing == "shared" else query_types(schema)


def query_texts(schema: TaskSchema, sharing: str = "per-type") -> dict[str, str]:
    """The text seeding each prompt block (``prompt_init="query"``): its hard query, relation queries with the head
    type's name as the head mention; a shared block takes every query in turn."""
    texts = {c.name: c.query for c in schema.concepts} | {r.name: r.format_query(r.head) for r in schema.relations}
    return {SHARED_BLOCK: " ".join(texts.values())} if sharing == "shared" else texts


def mrc_prompt_config(
    schema: TaskSchema, config: ClinicalPromptConfig | None = None, sharing: str = "per-type"
) -> ClinicalPromptConfig:
    """``config`` with the prompt blocks of ``schema`` (:func:`prompt_block_names`); by default deep prompts of 16
    virtual tokens, each block seeded from its query text (:func:`query_texts`)."""
    blocks = prompt_block_names(schema, sharing)
    if config is not None:
        return dataclasses.replace(config, prompt_blocks=blocks)
    return ClinicalPromptConfig(
        num_virtual_tokens=DEFAULT_VIRTUAL_TOKENS, depth="deep", prompt_blocks=blocks, prompt_init="query",
        prompt_init_texts=query_texts(schema, sharing),
    )


def word_masks(text: str, offsets: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
    """Per token: whether it starts a word and whether it ends one (0 for tokens outside the context)."""
    starts = [int(end > start and not inside_word(text, start)) for start, end in offsets]
    ends = [int(end > start and not inside_word(text, end)) for start, end in offsets]
    return starts, ends


def with_word_masks(rows: list[dict], documents: Sequence[Document]) -> list[dict]:
    """``rows`` with ``word_start_mask`` / ``word_end_mask`` from their offsets and their document's text."""
    texts = {doc.doc_id: doc.text for doc in documents}
    for row in rows:
        row["word_start_mask"], row["word_end_mask"] = word_masks(texts[row["doc_id"]], row["offset_mapping"])
    return rows
