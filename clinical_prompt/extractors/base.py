"""The extractor contract and what every extractor shares: saved-file names, atomic writes, predicted documents.

An extractor is an ``nn.Module`` that owns its encoder, heads, schema and tokenizer: it turns mapped Documents into
training rows (:meth:`Extractor.training_rows`), batches them (:meth:`Extractor.collate`, the batch goes to
``forward(**batch)``, which returns an object with ``.loss``) and turns Documents back into predicted Documents
(:meth:`Extractor.extract`). A saved extractor is a directory holding ``extractor.json`` (``kind``, ``strategy``
and the settings needed to rebuild it), ``schema.json`` and ``labels.json``, its weights as safetensors, and never a
local path.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from clinical_prompt.brat import Document, Entity, Relation, Span
from clinical_prompt.corpus.alignment import strip_span
from clinical_prompt.errors import ClinicalPromptError
from clinical_prompt.prompts.model import PICKLE_SUFFIXES, AdapterFormatError, inside
from clinical_prompt.schema import RelationType, TaskSchema
from clinical_prompt.strategies import Strategy, get_strategy

__all__ = [
    "BACKBONE_DIR", "EXTRACTOR_FILE", "LABELS_FILE", "SCHEMA_FILE", "DocumentPredictions", "EntityKey", "Extractor",
    "ExtractorFormatError", "length_batches", "pad_encoder_inputs", "pad_rows", "read_extractor_meta", "read_json", "save_backbone",
    "saved_backbone",
]

EXTRACTOR_FILE = "extractor.json"
SCHEMA_FILE = "schema.json"
LABELS_FILE = "labels.json"
BACKBONE_DIR = "backbone"


class ExtractorFormatError(ClinicalPromptError, ValueError):
    """A saved extractor directory is missing a file or holds one that cannot be read."""


class Extractor(nn.Module, ABC):
    """Base class of the strategies' extractors (see the module docstring)."""

    schema: TaskSchema
    tokenizer: Any
    strategy: str

    @abstractmethod
    def training_rows(self, documents: Sequence[Document]) -> list[dict]:
        """Training rows (concept and relation rows where the strategy has both) of mapped documents."""

    @abstractmethod
    def collate(self, rows: Sequence[dict]) -> dict[str, Tensor]:
        """A padded batch of rows, ready for ``forward(**batch)``."""

    @abstractmethod
    def forward(self, **batch: Tensor) -> Any:
        """Scores of a batch; the returned object has ``.loss`` when the batch carries labels."""

    @abstractmethod
    def param_groups(self, backbone_lr: float, head_lr: float, prompt_lr: float, weight_decay: float) -> list[dict]:
        """AdamW parameter groups of the trainable parameters, each part at its own rate."""

    @abstractmethod
    def extract(self, documents: Sequence[Document], *, batch_size: int = 32) -> list[Document]:
        """One predicted Document per input (same ``doc_id`` and text): entities ``T1..`` and relations ``R1..``."""

    def calibrate(self, documents: Sequence[Document], *, batch_size: int = 32) -> dict[str, float]:
        """Fit decoding settings to gold ``documents`` (e.g. a dev set) and return the values chosen; extractors
        without such settings keep everything and return ``{}``."""
        return {}

    @abstractmethod
    def save_pretrained(self, directory: str | os.PathLike, *, base_model_id: str | None = None) -> None:
        """Write the extractor to ``directory`` (safetensors, no local paths)."""

    @classmethod
    @abstractmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, backbone: str | None = None) -> Extractor:
        """Load an extractor written by :meth:`save_pretrained`."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def read_json(path: Path) -> Any:
    """The JSON content of ``path``; ``ExtractorFormatError`` naming the file when missing or invalid,
    ``AdapterFormatError`` when it leads outside its folder."""
    try:
        return json.loads(inside(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExtractorFormatError(f"{path}: missing; is this a directory written by save_pretrained?") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExtractorFormatError(f"{path}: not valid JSON ({error})") from None


def save_backbone(model: nn.Module, tokenizer: Any, directory: Path) -> None:
    """Save a trained backbone and its tokenizer (safetensors) into ``directory``, replacing it as a whole."""
    temporary = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        model.save_pretrained(temporary, safe_serialization=True)
        tokenizer.save_pretrained(temporary)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(temporary, directory)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


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
        raise AdapterFormatError(f"{folder}: holds no model.safetensors; is this a directory written by save_pretrained?")
    return folder


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


def pad_rows(rows: Sequence[dict], key: str, value: int, width: int) -> Tensor:
    """``row[key]`` of every row, right-padded with ``value`` to ``width``, as a ``[len(rows), width]`` long tensor."""
    return torch.tensor([list(row[key]) + [value] * (width - len(row[key])) for row in rows], dtype=torch.long)


def pad_encoder_inputs(rows: Sequence[dict], pad_token_id: int) -> dict[str, Tensor]:
    """``input_ids``, ``attention_mask`` (and ``token_type_ids`` where the rows have them), right-padded to the
    longest row."""
    width = max(len(row["input_ids"]) for row in rows)
    batch = {"input_ids": pad_rows(rows, "input_ids", pad_token_id, width),
             "attention_mask": pad_rows(rows, "attention_mask", 0, width)}
    if "token_type_ids" in rows[0]:
        batch["token_type_ids"] = pad_rows(rows, "token_type_ids", 0, width)
    return batch


def length_batches(
    rows: Sequence[dict], batch_size: int, key: Callable[[int], Any] | None = None
) -> Iterator[list[int]]:
    """Row indices in batches of ``batch_size``, rows of similar length together (less padding); ``key(index)``
    orders the rows instead of their length."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(rows)), key=key or (lambda i: len(rows[i]["input_ids"])))
    for begin in range(0, len(order), batch_size):
        yield order[begin : begin + batch_size]


EntityKey = tuple[str, int, int]  # (type, start, end)


def _fragments(text: str, start: int, end: int) -> tuple[Span, ...]:
    """``[start, end)`` cut at line breaks (a BRAT text field holds no line break), whitespace trimmed."""
    fragments = []
    for line in re.finditer(r"[^\r\n]+", text[start:end]):
        fragment = strip_span(text, start + line.start(), start + line.end())
        if fragment[0] < fragment[1]:
            fragments.append(fragment)
    return tuple(fragments)


class DocumentPredictions:
    """Predicted entities and relations of one document, gathered in any order, without duplicates.

    :meth:`document` numbers entities ``T1..`` by position and relations ``R1..`` by their arguments' positions,
    and orders relation arguments as BRAT does for the type (``RelationType.head_arg``). An entity whose span holds
    line breaks becomes a discontinuous entity of one fragment per line (its outer bounds are unchanged).
    """

    def __init__(self, source: Document) -> None:
        self.source = source
        self._entities: dict[EntityKey, tuple[Span, ...]] = {}
        self._relations: set[tuple[str, EntityKey, EntityKey]] = set()

    def add_entity(self, type_name: str, start: int, end: int) -> EntityKey | None:
        """Add an entity (a duplicate is ignored); its key, or ``None`` when the span holds no text."""
        key = (type_name, start, end)
        if key not in self._entities:
            fragments = _fragments(self.source.text, start, end)
            if not fragments:
                return None
            self._entities[key] = fragments
        return key

    def has_entity(self, key: EntityKey) -> bool:
        return key in self._entities

    def entity_keys(self) -> list[EntityKey]:
        return sorted(self._entities, key=lambda k: (k[1], k[2], k[0]))

    def add_relation(self, relation_type: RelationType, head: EntityKey, tail: EntityKey) -> None:
        """Add a relation between two added entities (a duplicate is ignored)."""
        if head not in self._entities or tail not in self._entities:
            raise KeyError("add both arguments as entities before the relation")
        arg1, arg2 = (head, tail) if relation_type.head_arg == "Arg1" else (tail, head)
        self._relations.add((relation_type.name, arg1, arg2))

    def document(self) -> Document:
        """The predicted Document (same ``doc_id`` and text as the source)."""
        text = self.source.text
        ids: dict[EntityKey, str] = {}
        entities: dict[str, Entity] = {}
        for number, key in enumerate(self.entity_keys(), start=1):
            fragments = self._entities[key]
            ids[key] = f"T{number}"
            entities[ids[key]] = Entity(ids[key], key[0], fragments, " ".join(text[s:e] for s, e in fragments))
        relations: dict[str, Relation] = {}
        ordered = sorted(self._relations, key=lambda r: (r[1][1:], r[2][1:], r[0]))
        for number, (type_name, arg1, arg2) in enumerate(ordered, start=1):
            relations[f"R{number}"] = Relation(f"R{number}", type_name, ids[arg1], ids[arg2])
        return Document(self.source.doc_id, text, entities=entities, relations=relations)
