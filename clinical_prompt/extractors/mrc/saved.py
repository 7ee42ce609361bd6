"""The saved layout of an MRC extractor, and its checked reading.

``extractor.json`` (kind, strategy, settings, public backbone id), ``schema.json``, ``labels.json`` (the query types
in prompt order); soft prompts: ``adapter_config.json`` + ``adapter_model.safetensors`` (prompt tables and
``heads.*``, the :meth:`PromptedEncoder.save_pretrained` layout); hard prompt: ``heads.safetensors``; strategies that
train the backbone: ``backbone/`` (``save_pretrained`` safetensors and the tokenizer).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clinical_prompt.extractors.base import ExtractorFormatError, read_saved_meta
from clinical_prompt.extractors.mrc.questions import prompt_block_names, query_types
from clinical_prompt.extractors.mrc.settings import KIND, MrcSettings
from clinical_prompt.layout import CONFIG_NAME, LABELS_FILE, SCHEMA_FILE, AdapterFormatError, read_json
from clinical_prompt.prompts.model import read_adapter_config
from clinical_prompt.schema import TaskSchema
from clinical_prompt.strategies import Strategy


@dataclass(frozen=True)
class SavedExtractor:
    """A saved MRC extractor's ``extractor.json`` content, strategy, settings and schema."""

    meta: dict
    spec: Strategy
    settings: MrcSettings
    schema: TaskSchema


def read_saved(directory: Path) -> SavedExtractor:
    """``extractor.json``, ``schema.json`` and ``labels.json`` of a saved MRC extractor, checked."""
    meta, spec, settings = read_saved_meta(directory, KIND, MrcSettings)
    schema = TaskSchema.from_dict(read_json(directory / SCHEMA_FILE), source=str(directory / SCHEMA_FILE))
    labels = read_json(directory / LABELS_FILE)
    if not isinstance(labels, dict) or labels.get("query_types") != query_types(schema):
        raise ExtractorFormatError(f"{directory / LABELS_FILE}: query_types differ from {SCHEMA_FILE}")
    if spec.uses_soft_prompts:
        blocks = read_adapter_config(directory / CONFIG_NAME).prompt_blocks
        expected = prompt_block_names(schema, settings.prompt_sharing)
        if blocks != expected:
            raise AdapterFormatError(
                f"{directory / CONFIG_NAME}: prompt_blocks {blocks} differ from {expected} (the query_types of "
                f"{LABELS_FILE}, or one shared block)"
            )
    return SavedExtractor(meta, spec, settings, schema)
