"""BRAT standoff: the document model, reader and writer.

Offsets are Unicode code points into the ``.txt`` file read with ``newline=""``, end exclusive.
Errors name the file, the line and the kind of problem, never the annotated text.
"""
from __future__ import annotations

from dataclasses import dataclass, field

Span = tuple[int, int]


@dataclass(frozen=True)
class Entity:
    """A text-bound annotation (``T`` line); ``spans`` holds one or more (start, end) fragments."""

    id: str
    type: str
    spans: tuple[Span, ...]
    text: str = ""

    @property
    def start(self) -> int:
        return self.spans[0][0]

    @property
    def end(self) -> int:
        return self.spans[-1][1]


@dataclass(frozen=True)
class Relation:
    """A binary relation (``R`` line) between two annotation ids (entities or events)."""

    id: str
    type: str
    arg1: str
    arg2: str
    arg1_role: str = "Arg1"
    arg2_role: str = "Arg2"


@dataclass(frozen=True)
class Event:
    """An event (``E`` line): a trigger entity id and (role, id) arguments."""

    id: str
    type: str
    trigger: str
    arguments: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Attribute:
    """An attribute or modifier (``A``/``M`` line); ``value`` is None for binary attributes."""

    id: str
    name: str
    target: str
    value: str | None = None


@dataclass(frozen=True)
class Normalization:
    """A normalization (``N`` line) linking an annotation to an external resource entry."""

    id: str
    type: str
    target: str
    resource: str
    entry: str
    text: str = ""


@dataclass(frozen=True)
class Note:
    """An annotator note (``#`` line)."""

    id: str
    type: str
    target: str
    text: str = ""


@dataclass(frozen=True)
class Equivalence:
    """An equivalence (``*`` line) over two or more annotation ids."""

    type: str
    members: tuple[str, ...]


@dataclass
class Document:
    """One note: its text and its annotations, keyed by id in file order."""

    doc_id: str
    text: str
    entities: dict[str, Entity] = field(default_factory=dict)
    relations: dict[str, Relation] = field(default_factory=dict)
    events: dict[str, Event] = field(default_factory=dict)
    attributes: dict[str, Attribute] = field(default_factory=dict)
    normalizations: dict[str, Normalization] = field(default_factory=dict)
    notes: dict[str, Note] = field(default_factory=dict)
    equivalences: list[Equivalence] = field(default_factory=list)


class BratFormatError(ValueError):
    """A problem in a BRAT file, located by file and line; the message never quotes annotated text."""

    def __init__(self, path: str, line: int | None, kind: str, detail: str = "") -> None:
        self.path, self.line, self.kind, self.detail = str(path), line, kind, detail
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {kind}" + (f" ({detail})" if detail else ""))
