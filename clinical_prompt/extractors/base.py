"""The extractor contract and what every extractor shares: saved-file names, atomic writes, predicted documents.

An extractor is an ``nn.Module`` that owns its encoder, heads, schema and tokenizer: it turns mapped Documents into
training rows (:meth:`Extractor.training_rows`), batches them (:meth:`Extractor.collate`, the batch goes to
``forward(**batch)``, which returns an object with ``.loss``) and turns Documents back into predicted Documents
(:meth:`Extractor.extract`). A saved extractor is a directory holding ``extractor.json`` (``kind``, ``strategy``
and the settings needed to rebuild it), ``schema.json`` and ``labels.json``, its weights as safetensors, and never a
local path.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from clinical_prompt.backbone import public_model_id
from clinical_prompt.brat import Document, Entity, Relation, Span
from clinical_prompt.corpus.alignment import strip_span
from clinical_prompt.layout import EXTRACTOR_FILE, ExtractorFormatError, read_json
from clinical_prompt.prompts.config import check_field_types
from clinical_prompt.schema import RelationType, TaskSchema
from clinical_prompt.strategies import Strategy, get_strategy

S = TypeVar("S")

__all__ = [
    "DocumentPredictions", "EntityKey", "Extractor", "ExtractorFormatError", "length_batches", "pad_encoder_inputs",
    "notes_as_documents", "pad_rows", "read_saved_meta", "save_backbone",
]


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

    @property
    def shares_trunk(self) -> bool:
        """Whether rows holding the same text share encoder work (late prompts), so that training batches should keep
        them together."""
        return False

    def extract(self, documents: Sequence[Document], *, batch_size: int = 32) -> list[Document]:
        """One predicted Document per input (same ``doc_id`` and text): entities ``T1..`` and relations ``R1..``."""
        return [prediction.document() for prediction in self.predictions(documents, batch_size=batch_size)]

    def predict(self, notes: Sequence[str], *, batch_size: int = 32) -> list[dict[str, list[dict[str, Any]]]]:
        """Entities and relations of each plain note string, with types, character offsets and scores (see
        :meth:`DocumentPredictions.results`); no Document needed."""
        predictions = self.predictions(notes_as_documents(notes), batch_size=batch_size)
        return [prediction.results() for prediction in predictions]

    @abstractmethod
    def predictions(self, documents: Sequence[Document], *, batch_size: int = 32) -> list[DocumentPredictions]:
        """The scored predictions of each document, in input order (annotations are ignored)."""

    def calibrate(self, documents: Sequence[Document], *, batch_size: int = 32) -> dict[str, float | str]:
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


def read_saved_meta(directory: Path, kind: str, settings_class: type[S]) -> tuple[dict, Strategy, S]:
    """The ``extractor.json`` of a saved extractor of ``kind``, checked: its strategy, its ``settings`` (each field of
    ``settings_class`` of its declared type, no other field) and a recorded backbone that is a hub id, never a path.

    Raises:
        ExtractorFormatError: naming the file and the field.
    """
    path = directory / EXTRACTOR_FILE
    meta = read_json(path)
    if not isinstance(meta, dict) or meta.get("kind") != kind:
        raise ExtractorFormatError(f"{path}: kind is not {kind!r}")
    recorded = meta.get("backbone")
    try:
        spec = get_strategy(meta["strategy"])
        settings = _read_settings(settings_class, meta["settings"])
        if recorded is not None and (not isinstance(recorded, str) or public_model_id(recorded) is None):
            raise ValueError(f"backbone={recorded!r} is not a hub id; an extractor never names a local path")
    except (KeyError, TypeError, ValueError) as error:
        raise ExtractorFormatError(f"{path}: {error}") from None
    return meta, spec, settings


def _read_settings(settings_class: type[S], data: Any) -> S:
    """``settings``: a JSON object of ``settings_class`` fields, each of its declared type."""
    if not isinstance(data, dict):
        raise TypeError(f"settings must be a JSON object, got {type(data).__name__}")
    try:
        unknown = check_field_types(settings_class, data)
    except ValueError as error:
        raise ValueError(f"settings.{error}") from None
    if unknown:
        raise ValueError(f"settings: unknown fields {unknown}")
    return settings_class(**data)


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
    """Predicted entities and relations of one document, gathered in any order, without duplicates, each with the
    score of its decoding (the highest where it was found more than once; ``None`` where none was given).

    :meth:`document` numbers entities ``T1..`` by position and relations ``R1..`` by their arguments' positions,
    and orders relation arguments as BRAT does for the type (``RelationType.head_arg``). An entity whose span holds
    line breaks becomes a discontinuous entity of one fragment per line (its outer bounds are unchanged).
    :meth:`results` gives the same, numbered alike, as plain data with the scores.
    """

    def __init__(self, source: Document) -> None:
        self.source = source
        self._entities: dict[EntityKey, tuple[Span, ...]] = {}
        self._relations: dict[tuple[str, EntityKey, EntityKey], float | None] = {}
        self._scores: dict[EntityKey, float | None] = {}

    def add_entity(self, type_name: str, start: int, end: int, score: float | None = None) -> EntityKey | None:
        """Add an entity (a duplicate keeps the higher score); its key, or ``None`` when the span holds no text."""
        key = (type_name, start, end)
        if key not in self._entities:
            fragments = _fragments(self.source.text, start, end)
            if not fragments:
                return None
            self._entities[key] = fragments
        self._scores[key] = _higher(self._scores.get(key), score)
        return key

    def has_entity(self, key: EntityKey) -> bool:
        return key in self._entities

    def entity_keys(self) -> list[EntityKey]:
        return sorted(self._entities, key=lambda k: (k[1], k[2], k[0]))

    def add_relation(
        self, relation_type: RelationType, head: EntityKey, tail: EntityKey, score: float | None = None
    ) -> None:
        """Add a relation between two added entities (a duplicate keeps the higher score)."""
        if head not in self._entities or tail not in self._entities:
            raise KeyError("add both arguments as entities before the relation")
        arg1, arg2 = (head, tail) if relation_type.head_arg == "Arg1" else (tail, head)
        key = (relation_type.name, arg1, arg2)
        self._relations[key] = _higher(self._relations.get(key), score)

    def _numbered(self) -> tuple[dict[EntityKey, str], list[tuple[str, EntityKey, EntityKey]]]:
        ids = {key: f"T{number}" for number, key in enumerate(self.entity_keys(), start=1)}
        return ids, sorted(self._relations, key=lambda r: (r[1][1:], r[2][1:], r[0]))

    def document(self) -> Document:
        """The predicted Document (same ``doc_id`` and text as the source)."""
        text = self.source.text
        ids, ordered = self._numbered()
        entities: dict[str, Entity] = {}
        for key, ident in ids.items():
            fragments = self._entities[key]
            entities[ident] = Entity(ident, key[0], fragments, " ".join(text[s:e] for s, e in fragments))
        relations: dict[str, Relation] = {}
        for number, (type_name, arg1, arg2) in enumerate(ordered, start=1):
            relations[f"R{number}"] = Relation(f"R{number}", type_name, ids[arg1], ids[arg2])
        return Document(self.source.doc_id, text, entities=entities, relations=relations)

    def results(self) -> dict[str, list[dict[str, Any]]]:
        """``{"entities": [{id, type, start, end, text, score}], "relations": [{id, type, arg1, arg2, score}]}``:
        character offsets into the text (end exclusive, outer bounds), ids and order as in :meth:`document`."""
        ids, ordered = self._numbered()
        entities = [{"id": ident, "type": key[0], "start": key[1], "end": key[2],
                     "text": self.source.text[key[1]:key[2]], "score": self._scores[key]} for key, ident in ids.items()]
        relations = [{"id": f"R{number}", "type": key[0], "arg1": ids[key[1]], "arg2": ids[key[2]],
                      "score": self._relations[key]} for number, key in enumerate(ordered, start=1)]
        return {"entities": entities, "relations": relations}


def _higher(old: float | None, new: float | None) -> float | None:
    return new if old is None else old if new is None else max(old, new)


def notes_as_documents(notes: Sequence[str]) -> list[Document]:
    """Plain note strings as Documents with ids ``"0"``, ``"1"``, ... (for :meth:`Extractor.predict`)."""
    if isinstance(notes, str) or not all(isinstance(note, str) for note in notes):
        raise TypeError("predict takes a list of note strings")
    return [Document(str(index), note) for index, note in enumerate(notes)]
