"""One module for the saved layout: file names, and the untrusted readers used by every loader, card, push and bank.

A saved extractor is a folder holding ``extractor.json`` (kind, strategy, settings, the base's hub id),
``schema.json``, ``labels.json`` and its weights as safetensors: ``adapter_config.json`` + ``adapter_model.safetensors``
(soft prompts, PEFT's layout), ``heads.safetensors`` (hard prompt and finetune), ``backbone/`` (strategies that train
the backbone), and its card ``README.md``.

Every file of such a folder is read as untrusted: it must lie inside the folder once links are followed (in the Hub
cache, a snapshot's links into its own repository's blobs are inside), JSON must parse, safetensors headers must
hold exactly the expected tensor names, shapes and floating types before any tensor is read, and pickles are never
read. Each refusal names the file and the field or tensor.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from clinical_prompt.errors import ClinicalPromptError
from clinical_prompt.strategies import Strategy, get_strategy

EXTRACTOR_FILE = "extractor.json"
SCHEMA_FILE = "schema.json"
LABELS_FILE = "labels.json"
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
HEADS_FILE = "heads.safetensors"
HEADS_PREFIX = "heads."
BACKBONE_DIR = "backbone"
CARD_FILE = "README.md"
LAYOUT = frozenset({EXTRACTOR_FILE, SCHEMA_FILE, LABELS_FILE, CONFIG_NAME, WEIGHTS_NAME, HEADS_FILE, CARD_FILE})
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
HUB_BLOBS = "blobs"  # file contents in a Hub cache repository (and the cache's shared store)


class ExtractorFormatError(ClinicalPromptError, ValueError):
    """A saved extractor directory is missing a file or holds one that cannot be read."""


class AdapterFormatError(ClinicalPromptError, ValueError):
    """An adapter directory is missing a file, or holds one that is unreadable or of the wrong shape."""


def _trusted_roots(directory: Path) -> list[Path]:
    """Where files of ``directory`` may lead: the folder itself and, for a folder inside a Hub cache snapshot
    (``<cache>/models--ORG--NAME/snapshots/<commit>/``), that repository's blobs and the cache's shared blob store."""
    roots = [directory.resolve()]
    for folder in (directory, *directory.parents):
        if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
            repo = folder.parent.parent
            roots += [(repo / HUB_BLOBS).resolve(), (repo.parent / HUB_BLOBS).resolve()]
            break
    return roots


def inside(path: Path, directory: Path | None = None) -> Path:
    """``path``, once it is known to resolve inside ``directory`` (default: its own folder): a name with ``..`` or a
    symbolic link that leads out of an adapter is refused; a Hub cache snapshot's links into its repository's blobs
    are inside.

    Raises:
        AdapterFormatError: naming the file.
    """
    directory = path.parent if directory is None else directory
    if not any(path.resolve().is_relative_to(root) for root in _trusted_roots(directory)):
        raise AdapterFormatError(f"{path}: leads outside {directory}; an adapter's files must lie inside it")
    return path


def read_json(path: Path) -> Any:
    """The JSON content of ``path``; ``ExtractorFormatError`` naming the file when missing or invalid,
    ``AdapterFormatError`` when it leads outside its folder."""
    try:
        return json.loads(inside(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExtractorFormatError(f"{path}: missing; is this a directory written by save_pretrained?") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExtractorFormatError(f"{path}: not valid JSON ({error})") from None


def read_extractor_meta(directory: str | os.PathLike) -> tuple[dict, Strategy]:
    """The ``extractor.json`` of a saved extractor and the strategy it names; ``ExtractorFormatError`` otherwise."""
    path = Path(directory) / EXTRACTOR_FILE
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise ExtractorFormatError(f"{path}: expected a JSON object")
    try:
        return meta, get_strategy(meta.get("strategy"))
    except ValueError as error:
        raise ExtractorFormatError(f"{path}: {error}") from None


def _pickles_beside(path: Path) -> list[Path]:
    folder = path.parent
    return sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []


def read_safetensors(path: Path, expected: Mapping[str, torch.Size]) -> dict[str, Tensor]:
    """The tensors of a safetensors file whose header holds exactly the ``expected`` names and shapes, in floating
    point; the header is checked before any tensor is read. Pickles (``*.bin``, ``*.pt``, ...) are never read.

    Raises:
        AdapterFormatError: naming the file, and the tensor where one differs; where the file is missing and pickles
            lie beside it, naming them.
    """
    if not inside(path).is_file():
        pickles = _pickles_beside(path)
        if pickles:
            raise AdapterFormatError(
                f"{', '.join(map(str, pickles))}: pickle weights are never loaded (unpickling can run code); "
                f"save the weights as {path.name}"
            )
        raise AdapterFormatError(
            f"{path}: missing; is this a directory written by save_pretrained? (weights are read from safetensors "
            "only, never from pickles)"
        )
    try:
        with safe_open(path, framework="pt") as stored:
            names = list(stored.keys())
            _check_header(path, {name: stored.get_slice(name) for name in names}, expected)
            return {name: stored.get_tensor(name) for name in names}
    except SafetensorError as error:
        reason = " ".join(str(error).split())
        raise AdapterFormatError(f"{path}: not a complete safetensors file ({reason})") from None


def _check_header(path: Path, stored: Mapping[str, Any], expected: Mapping[str, torch.Size]) -> None:
    missing, unexpected = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    if missing or unexpected:
        heads_differ = any(name.startswith(HEADS_PREFIX) for name in missing + unexpected)
        hint = " (pass the heads module the adapter was trained with)" if heads_differ else ""
        raise AdapterFormatError(
            f"{path}: tensors do not match the model{hint}: missing {missing}, unexpected {unexpected}"
        )
    for name, shape in expected.items():
        if list(stored[name].get_shape()) != list(shape):
            raise AdapterFormatError(
                f"{path}: tensor {name!r} has shape {list(stored[name].get_shape())}, expected {list(shape)}"
            )
        if not stored[name].get_dtype().startswith(("F", "BF")):
            raise AdapterFormatError(f"{path}: tensor {name!r} holds {stored[name].get_dtype()}, not floating point")


def saved_backbone(directory: Path) -> Path:
    """The ``backbone/`` folder of a saved extractor, once every entry in it is known to lie inside ``directory``
    (no ``..``, no symbolic link leading out, also among the shards an index names) and its weights to be
    safetensors; load it with ``use_safetensors=True``, so that a pickle beside them is never read.

    Raises:
        AdapterFormatError: naming the entry, or the pickles where no safetensors weights are found.
    """
    folder = inside(directory / BACKBONE_DIR, directory)
    for root, folders, files in os.walk(folder):
        for name in folders + files:
            inside(Path(root) / name, directory)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        content = read_json(index)
        weight_map = content.get("weight_map") if isinstance(content, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
            raise AdapterFormatError(f"{index}: weight_map must map tensor names to shard file names")
        for name in set(weight_map.values()):
            inside(folder / name, folder)
    elif not (folder / "model.safetensors").is_file():
        pickles = sorted(str(p) for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise AdapterFormatError(
                f"{', '.join(pickles)}: pickle weights are never loaded (unpickling can run code); save the backbone "
                "with safe_serialization=True"
            )
        raise AdapterFormatError(
            f"{folder}: holds no model.safetensors; is this a directory written by save_pretrained?"
        )
    return folder
