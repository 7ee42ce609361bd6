"""Extractors: one per strategy family, built by name and reloaded from their saved directories.

``finetune`` is served by :class:`~clinical_prompt.extractors.tagging.TaggingExtractor` (BIO tagging), the prompt
strategies (``hard-prompt``, ``soft-prompt``, ``soft-prompt-frozen``) by
:class:`~clinical_prompt.extractors.mrc.MrcExtractor`.
"""
from __future__ import annotations

import os
from typing import Any

from clinical_prompt.extractors.base import DocumentPredictions, Extractor, ExtractorFormatError
from clinical_prompt.extractors.mrc import MrcExtractor, MrcSettings
from clinical_prompt.layout import read_extractor_meta
from clinical_prompt.pull import saved_extractor
from clinical_prompt.schema import TaskSchema, load_schema
from clinical_prompt.strategies import STRATEGIES, Strategy, get_strategy

__all__ = [
    "STRATEGIES",
    "DocumentPredictions",
    "Extractor",
    "ExtractorFormatError",
    "MrcExtractor",
    "MrcSettings",
    "Strategy",
    "build_extractor",
    "from_pretrained",
    "get_strategy",
    "load_extractor",
]


def _extractor_class(strategy: Strategy) -> type[Extractor]:
    if strategy.input_format == "bio":
        from clinical_prompt.extractors.tagging import TaggingExtractor

        return TaggingExtractor
    return MrcExtractor


def build_extractor(
    strategy: str,
    schema: TaskSchema | str,
    backbone: str | os.PathLike = "minilm",
    *,
    prompt_config: Any = None,
    max_length: int = 256,
    **options: Any,
) -> Extractor:
    """A new, untrained extractor for ``strategy`` over ``schema`` (a TaskSchema or a schema name or file).

    ``prompt_config`` (a ``ClinicalPromptConfig``) applies to soft prompts only; ``options`` go to the extractor
    (``MrcSettings`` fields for the prompt strategies). Seed torch first for reproducible initial weights.
    """
    spec = get_strategy(strategy)
    if isinstance(schema, str):
        schema = load_schema(schema)
    if spec.input_format == "bio":
        if prompt_config is not None:
            raise ValueError(f"strategy {spec.name!r} uses no soft prompt; leave prompt_config unset")
        return _extractor_class(spec)(schema, backbone, max_length=max_length, **options)
    return MrcExtractor.create(
        schema, backbone, strategy=spec.name, prompt_config=prompt_config, max_length=max_length, **options
    )


def load_extractor(
    name_or_path: str | os.PathLike,
    backbone: str | None = None,
    *,
    revision: str | None = None,
    token: str | None = None,
) -> Extractor:
    """Reload an extractor saved with ``save_pretrained``, of the class its ``extractor.json`` strategy names, from a
    local folder or a hub repository ``ORG/NAME[@REVISION]`` (see :mod:`clinical_prompt.pull`; ``token`` defaults to
    ``HF_TOKEN``).

    ``backbone`` is needed only for frozen extractors saved from a local backbone folder.
    """
    with saved_extractor(name_or_path, revision=revision, token=token) as directory:
        _, spec = read_extractor_meta(directory)
        return _extractor_class(spec).from_pretrained(directory, backbone=backbone)


from_pretrained = load_extractor  # the Hugging Face name: any saved extractor, by hub repo id or folder
