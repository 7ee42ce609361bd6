"""Model cards of saved extractors: a Hugging Face ``README.md`` built from the directory's own files.

The card reads ``extractor.json``, ``schema.json``, ``adapter_config.json`` (soft prompts) and the weight files'
tensor shapes and sizes; scores come from an evaluation JSON (:mod:`clinical_prompt.evaluation.n2c2`) and the
training data enter by name and counts only (:func:`training_data_summary`). No note text, document id or local
path reaches the card. The Jinja template is ``model_cards/adapter_card.md.j2``, shipped as package data through
the ``clinical_prompt/model_cards`` link.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData
from safetensors import SafetensorError, safe_open

from clinical_prompt.atomic import write_text
from clinical_prompt.backbone import DEFAULT_BACKBONE, OFFLINE_BACKBONES, offline_name, public_model_id
from clinical_prompt.brat import Document
from clinical_prompt.errors import ClinicalPromptError
from clinical_prompt.layout import (
    BACKBONE_DIR,
    CARD_FILE,
    CONFIG_NAME,
    EXTRACTOR_FILE,
    HEADS_FILE,
    SCHEMA_FILE,
    WEIGHTS_NAME,
    ExtractorFormatError,
    inside,
    read_extractor_meta,
    read_json,
)
from clinical_prompt.pull import parse_repo_id
from clinical_prompt.schema import TaskSchema

__all__ = [
    "CARD_FILE", "LIBRARY_NAME", "MINILM_HUB_ID", "TEMPLATE", "render_card", "training_data_summary", "write_card",
]

TEMPLATE = files("clinical_prompt") / "model_cards" / "adapter_card.md.j2"
MINILM_HUB_ID = OFFLINE_BACKBONES[DEFAULT_BACKBONE].hub_id
LIBRARY_NAME = "clinical-prompt"  # what loads the extractor: clinical_prompt.from_pretrained
TAGS = ("clinical", "information-extraction", "prompt-tuning")
TRAINING_COUNTS = ("documents", "concepts", "relations")
KINDS = ("concepts", "relations")
MODES = ("strict", "lenient")
MATCHINGS = ("official", "one-to-one")
SCORES = ("precision", "recall", "f1")


def training_data_summary(name: str, documents: Sequence[Document]) -> dict[str, Any]:
    """``{"name", "documents", "concepts", "relations"}`` of mapped training documents: counts only, no text or ids."""
    return {
        "name": name,
        "documents": len(documents),
        "concepts": sum(len(doc.entities) for doc in documents),
        "relations": sum(len(doc.relations) for doc in documents),
    }


def _check_training_data(data: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(data) - {"name", *TRAINING_COUNTS})
    if unknown:
        raise ValueError(f"training_data: unknown keys {unknown}; give name and {', '.join(TRAINING_COUNTS)} only")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or "\n" in name or len(name) > 100:
        raise ValueError("training_data: name must be a short one-line data set name")
    for key in TRAINING_COUNTS:
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"training_data: {key} must be a count (an integer >= 0), got {value!r}")
    return dict(data)


class MetricsFormatError(ClinicalPromptError, ValueError):
    """Metrics that are not the evaluation JSON of :mod:`clinical_prompt.evaluation`."""


def _read_metrics(path: str | os.PathLike) -> Mapping[str, Any]:
    """The JSON object in the file ``path``; :class:`MetricsFormatError` naming the file and the position."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise MetricsFormatError(f"{path}: not JSON (line {error.lineno}, column {error.colno})") from None
    except UnicodeDecodeError as error:
        raise MetricsFormatError(f"{path}: not UTF-8 text (byte {error.start})") from None


def _scores(metrics: Mapping[str, Any], schema: TaskSchema) -> dict[str, Any]:
    """Micro P/R/F1 rows per kind and mode, strict F1 per schema type (``None`` where unscored), the gold docs."""
    names = {"concepts": schema.concept_names, "relations": schema.relation_names}
    try:
        micro = [{"kind": kind, "mode": mode, **{k: float(metrics[kind][mode]["micro"][k]) for k in SCORES}}
                 for kind in KINDS for mode in MODES]
        per_type = []
        for kind in KINDS:
            scored = metrics[kind]["strict"]["per_type"]
            for name in names[kind]:
                row = scored.get(name)
                per_type.append({"type": name, "f1": None} if row is None else
                                {"type": name, "f1": float(row["f1"]), "gold": int(row["tp"]) + int(row["fn"])})
        # evaluation JSON written before these fields existed scored every gold document, counted one-to-one
        documents = int(metrics["documents"].get("scored", metrics["documents"]["gold"]))
        matching = metrics.get("matching", "one-to-one")
        if matching not in MATCHINGS:
            raise ValueError(f"matching must be one of {MATCHINGS}, got {matching!r}")
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise MetricsFormatError(
            f"metrics: not the evaluation JSON of clinical_prompt.evaluation ({type(error).__name__}: {error})"
        ) from None
    return {"micro": micro, "per_type": per_type, "documents": documents, "matching": matching}


def _weight_files(directory: Path, paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Relative path, size in bytes and tensor elements of each weight file."""
    rows = []
    for path in paths:
        try:
            with safe_open(inside(path, directory), framework="pt") as tensors:
                elements = sum(math.prod(tensors.get_slice(name).get_shape()) for name in tensors.keys())
        except (OSError, SafetensorError) as error:
            raise ExtractorFormatError(f"{path}: not a readable safetensors file ({error})") from None
        rows.append({"file": path.relative_to(directory).as_posix(), "bytes": path.stat().st_size,
                     "parameters": elements})
    return rows


def _backbone(directory: Path, recorded: str | None, prompt: Mapping[str, Any] | None) -> dict[str, Any]:
    """The recorded backbone, its hub id, whether it is MiniLM, and its shape from the adapter's files."""
    if recorded is not None and public_model_id(recorded) is None:
        raise ExtractorFormatError(f"{directory / EXTRACTOR_FILE}: backbone is not a hub id")
    if prompt is not None:
        shape = {"type": prompt.get("base_model_type"), "layers": prompt.get("num_layers"),
                 "hidden": prompt.get("token_dim")}
    else:
        config = read_json(directory / BACKBONE_DIR / "config.json")
        shape = {"type": config.get("model_type"), "layers": config.get("num_hidden_layers"),
                 "hidden": config.get("hidden_size")}
    short = offline_name(recorded)
    offline = OFFLINE_BACKBONES[short] if short else None
    return {"recorded": recorded, "hub_id": public_model_id(recorded), "offline": offline, **shape}


def render_card(
    adapter_dir: str | os.PathLike,
    *,
    metrics: Mapping[str, Any] | str | os.PathLike | None = None,
    training_data: Mapping[str, Any] | None = None,
    license: str = "other",
    repo_id: str | None = None,
) -> ModelCard:
    """The model card of an extractor directory written by ``save_pretrained``.

    ``metrics``: the evaluation JSON (a dict, or the path of the file ``clinical-prompt evaluate --json`` wrote).
    ``training_data``: ``{"name": ..., "documents": n, "concepts": n, "relations": n}`` (see
    :func:`training_data_summary`); any other key is refused. ``license``: the Hub license identifier. ``repo_id``:
    the Hub repository ``ORG/NAME`` it will be pushed to, which the card's usage snippet loads.
    """
    if repo_id is not None and (parse_repo_id(repo_id) is None or "@" in repo_id):
        raise ValueError(f"repo_id={repo_id!r} is not a hub repo id ORG/NAME")
    directory = Path(adapter_dir)
    meta, strategy = read_extractor_meta(directory)
    schema = TaskSchema.from_dict(read_json(directory / SCHEMA_FILE), source=str(directory / SCHEMA_FILE))
    prompt = read_json(directory / CONFIG_NAME) if strategy.uses_soft_prompts else None
    backbone = _backbone(directory, meta.get("backbone"), prompt)
    weights = [directory / (WEIGHTS_NAME if strategy.uses_soft_prompts else HEADS_FILE)]
    if not strategy.freeze_backbone:
        weights += sorted((directory / BACKBONE_DIR).glob("*.safetensors"))
    weight_files = _weight_files(directory, weights)
    if metrics is not None and not isinstance(metrics, Mapping):
        metrics = _read_metrics(metrics)
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        base_model=backbone["hub_id"],
        license=license,
        tags=[*TAGS, strategy.name, "clinical-prompt"],
    )
    return ModelCard.from_template(
        card_data,
        template_str=TEMPLATE.read_text(encoding="utf-8"),
        schema=schema,
        strategy=strategy,
        kind=meta.get("kind"),
        max_length=(meta.get("settings") or {}).get("max_length"),
        prompt=prompt,
        backbone=backbone,
        weight_files=weight_files,
        total_bytes=sum(row["bytes"] for row in weight_files),
        total_parameters=sum(row["parameters"] for row in weight_files),
        scores=None if metrics is None else _scores(metrics, schema),
        training_data=None if training_data is None else _check_training_data(training_data),
        repo_id=repo_id,
        source=repo_id or "path/to/adapter",
    )


def write_card(
    adapter_dir: str | os.PathLike,
    *,
    metrics: Mapping[str, Any] | str | os.PathLike | None = None,
    training_data: Mapping[str, Any] | None = None,
    license: str = "other",
    repo_id: str | None = None,
) -> Path:
    """Render the card (see :func:`render_card`) and write it atomically to ``adapter_dir/README.md``; its path."""
    card = render_card(adapter_dir, metrics=metrics, training_data=training_data, license=license, repo_id=repo_id)
    path = Path(adapter_dir) / CARD_FILE
    write_text(path, card.content)
    return path
