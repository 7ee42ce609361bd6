"""BRAT standoff: the document model, reader and writer.

Offsets are Unicode code points into the ``.txt`` file, end exclusive. Files are read as bytes and
decoded as UTF-8 without newline translation (as ``open(..., newline="")`` reads them), so a CRLF
counts as two code points. A leading byte order mark in a ``.txt`` file is kept as U+FEFF at offset
0, as BRAT itself counts it (BRAT decodes with the ``utf8`` codec, which keeps it); the shared
corpora have none. A BOM at the start of a ``.ann`` file carries no offsets and is ignored.

The text field of a ``T`` line must equal the document text at its spans, fragments joined by one
space (BRAT 1.3 and later) or, as BRAT also accepts, by nothing (older files, e.g. 2 entities in DDI).
Whitespace after that text (BRAT's "tail") is allowed.

``format_ann`` writes one annotation per line, in file order (``Document.order``; annotations
missing from it follow, by kind). A file read and written back is identical except for these
normalizations:

- whitespace after a line's last field is dropped: BRAT's trailing tab on ``R`` lines and trailing
  space on ``E`` lines (MACCROBAT ``R1<TAB>MODIFY Arg1:T6 Arg2:E1<TAB>``, ``E1<TAB>Clinical_event:T5 ``)
  and a ``T`` line's tail (MACCROBAT 25661749 T145); the text of ``T``, ``#`` and ``N`` lines is kept
  as written, trailing whitespace included;
- lines end with LF (a CRLF ``.ann`` is read), every line is terminated, blank lines and a BOM are
  dropped.

A field holding a line break cannot be written: ``format_ann`` raises ("line break in a field").

Problems are reported as ``BratProblem(path, line, kind, detail)`` or raised as ``BratFormatError``;
the detail names ids and offsets (at most 200 characters), never annotated or note text. Kinds:
"missing file", "unreadable file", "not a regular file" (a directory, FIFO or device is never read),
"not UTF-8", "malformed line", "unknown annotation kind", "duplicate id", "offset out of range",
"start after end", "text mismatch", "missing reference". With ``collect_problems=True`` a line with
a problem is left out of its document, and so is every annotation that refers, directly or through
others, to an id that is left out or was never defined (each reported with its own line); the rest
of the document is kept. A document whose ``.txt`` or ``.ann`` cannot be read or is not UTF-8 is
left out. A file removed between listing and reading is a "missing file".
"""
from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from clinical_prompt import atomic
from clinical_prompt.errors import ClinicalPromptError

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
    """One note: its text and its annotations, keyed by id in file order.

    ``order`` lists the ids in file order, ``"*"`` standing for the next equivalence; ``format_ann``
    follows it so read files write back unchanged.
    """

    doc_id: str
    text: str
    entities: dict[str, Entity] = field(default_factory=dict)
    relations: dict[str, Relation] = field(default_factory=dict)
    events: dict[str, Event] = field(default_factory=dict)
    attributes: dict[str, Attribute] = field(default_factory=dict)
    normalizations: dict[str, Normalization] = field(default_factory=dict)
    notes: dict[str, Note] = field(default_factory=dict)
    equivalences: list[Equivalence] = field(default_factory=list)
    order: list[str] = field(default_factory=list)


class BratFormatError(ClinicalPromptError, ValueError):
    """A problem in a BRAT file, located by file and line; the message never quotes annotated text."""

    def __init__(self, path: str, line: int | None, kind: str, detail: str = "") -> None:
        self.path, self.line, self.kind, self.detail = str(path), line, kind, detail
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {kind}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class BratProblem:
    """A problem collected while reading a corpus; ``line`` is 1-based, None for a whole file."""

    path: str
    line: int | None
    kind: str
    detail: str = ""

    def error(self) -> BratFormatError:
        return BratFormatError(self.path, self.line, self.kind, self.detail)


@dataclass
class BratCorpus:
    """The documents of a BRAT directory and the problems found reading it."""

    documents: list[Document] = field(default_factory=list)
    problems: list[BratProblem] = field(default_factory=list)


Annotation = Entity | Relation | Event | Attribute | Normalization | Note | Equivalence
_FIELDS = {Entity: "entities", Relation: "relations", Event: "events", Attribute: "attributes",
           Normalization: "normalizations", Note: "notes"}
_ID = re.compile(r"(?:[A-Za-z]+|#)[0-9]+|\*")
_OFFSETS = re.compile(r"[^ ;]+ [^ ;]+(?:;[^ ;]+ [^ ;]+)*")  # "start end" fragments joined by ";"
_OFFSET_SEPARATOR = re.compile("[ ;]")
_DETAIL_LIMIT = 200  # characters of a problem's detail


class _LineProblem(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(kind)
        self.kind, self.detail = kind, detail


def _malformed(ann_id: str) -> _LineProblem:
    return _LineProblem("malformed line", f"id {ann_id}")


def _role_ref(token: str, ann_id: str) -> tuple[str, str]:
    role, colon, ref = token.partition(":")
    if not (role and colon and ref):
        raise _malformed(ann_id)
    return role, ref


def _format_spans(spans: tuple[Span, ...]) -> str:
    return ";".join(f"{start} {end}" for start, end in spans)


def _entity(ann_id: str, rest: str, text: str) -> Entity:
    fields, tab, written = rest.partition("\t")
    type_, _, offsets = fields.partition(" ")
    if not (tab and type_ and _OFFSETS.fullmatch(offsets)):
        raise _malformed(ann_id)
    try:
        numbers = [int(number) for number in _OFFSET_SEPARATOR.split(offsets)]
    except ValueError:
        raise _malformed(ann_id) from None
    spans = tuple(zip(numbers[::2], numbers[1::2]))
    for start, end in spans:
        if start > end:
            raise _LineProblem("start after end", f"id {ann_id}, span {start} {end}")
        if start < 0 or end > len(text):
            raise _LineProblem("offset out of range", f"id {ann_id}, span {start} {end}, length {len(text)}")
    if sum(numbers[1::2]) - sum(numbers[::2]) <= len(written):  # else no match, and fragments could be huge
        fragments = [text[start:end] for start, end in spans]
        expected = " ".join(fragments)
        if written.startswith(expected) and not written[len(expected):].strip():
            return Entity(ann_id, type_, spans, expected)
        if written == "".join(fragments):
            return Entity(ann_id, type_, spans, written)
    raise _LineProblem("text mismatch", f"id {ann_id}, spans {_format_spans(spans[:_DETAIL_LIMIT])}")


def _parts(ann_id: str, fields: str, least: int, most: float) -> list[str]:
    parts = fields.split()
    if not least <= len(parts) <= most:
        raise _malformed(ann_id)
    return parts


def _relation(ann_id: str, rest: str, text: str) -> Relation:
    type_, first, second = _parts(ann_id, rest, 3, 3)
    (role1, arg1), (role2, arg2) = _role_ref(first, ann_id), _role_ref(second, ann_id)
    return Relation(ann_id, type_, arg1, arg2, role1, role2)


def _event(ann_id: str, rest: str, text: str) -> Event:
    head, *arguments = _parts(ann_id, rest, 1, math.inf)
    type_, trigger = _role_ref(head, ann_id)
    return Event(ann_id, type_, trigger, tuple(_role_ref(argument, ann_id) for argument in arguments))


def _attribute(ann_id: str, rest: str, text: str) -> Attribute:
    name, target, *value = _parts(ann_id, rest, 2, 3)
    return Attribute(ann_id, name, target, value[0] if value else None)


def _normalization(ann_id: str, rest: str, text: str) -> Normalization:
    fields, _, name = rest.partition("\t")
    type_, target, reference = _parts(ann_id, fields, 3, 3)
    resource, entry = _role_ref(reference, ann_id)
    return Normalization(ann_id, type_, target, resource, entry, name)


def _note(ann_id: str, rest: str, text: str) -> Note:
    fields, _, note = rest.partition("\t")
    type_, target = _parts(ann_id, fields, 2, 2)
    return Note(ann_id, type_, target, note)


def _equivalence(ann_id: str, rest: str, text: str) -> Equivalence:
    type_, *members = _parts(ann_id, rest, 3, math.inf)
    return Equivalence(type_, tuple(members))


_PARSERS = {"T": _entity, "R": _relation, "E": _event, "A": _attribute, "M": _attribute,
            "N": _normalization, "#": _note, "*": _equivalence}


def _parse_line(line: str, text: str) -> Annotation:
    ann_id, tab, rest = line.partition("\t")
    if not (tab and _ID.fullmatch(ann_id)):
        raise _LineProblem("malformed line", "no annotation id and tab at the start")
    parser = _PARSERS.get(ann_id[0])
    if parser is None:
        raise _LineProblem("unknown annotation kind", f"id {ann_id}")
    return parser(ann_id, rest, text)


def _refs(ann: Annotation) -> tuple[str, ...]:
    """The ids ``ann`` refers to."""
    match ann:
        case Event():
            return (ann.trigger, *(ref for _, ref in ann.arguments))
        case Relation():
            return ann.arg1, ann.arg2
        case Attribute() | Normalization() | Note():
            return (ann.target,)
        case Equivalence():
            return ann.members
    return ()


def _dangling(ann: Annotation, known: dict[str, Annotation]) -> str | None:
    """The first id ``ann`` refers to that is not known, or an event trigger that is no entity."""
    if isinstance(ann, Event) and not isinstance(known.get(ann.trigger), Entity):
        return ann.trigger
    return next((ref for ref in _refs(ann) if ref not in known), None)


def _problem(path: Path, line: int, kind: str, detail: str) -> BratProblem:
    """A problem whose detail is clipped: a huge id or span list in a file makes no huge message."""
    if len(detail) > _DETAIL_LIMIT:
        detail = detail[:_DETAIL_LIMIT - 3] + "..."
    return BratProblem(str(path), line, kind, detail)


def _drop_dangling(
    kept: list[tuple[int, Annotation]], known: dict[str, Annotation], path: Path
) -> tuple[list[tuple[int, Annotation]], list[BratProblem]]:
    """Leave out, and report, every annotation that refers directly or through others to an unknown id.

    Linear in the number of references: a dropped id revisits only the annotations that refer to it.
    """
    referrers: dict[str, list[int]] = {}
    for index, (_, ann) in enumerate(kept):
        for ref in _refs(ann):
            referrers.setdefault(ref, []).append(index)
    problems, dropped = [], set()
    pending = list(reversed(range(len(kept))))
    while pending:
        index = pending.pop()
        number, ann = kept[index]
        ref = None if index in dropped else _dangling(ann, known)
        if ref is None:
            continue
        dropped.add(index)
        label = ann.id if not isinstance(ann, Equivalence) else "*"
        target = ref if _ID.fullmatch(ref) else "a malformed id"
        problems.append(_problem(path, number, "missing reference", f"{label} refers to {target}"))
        if not isinstance(ann, Equivalence):
            del known[ann.id]
            pending.extend(reversed(referrers.get(ann.id, [])))
    return [item for index, item in enumerate(kept) if index not in dropped], problems


def _parse_ann(doc_id: str, text: str, ann_text: str, path: Path) -> tuple[Document, list[BratProblem]]:
    problems: list[BratProblem] = []
    kept: list[tuple[int, Annotation]] = []
    known: dict[str, Annotation] = {}
    for number, line in enumerate(ann_text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            ann = _parse_line(line, text)
        except _LineProblem as problem:
            problems.append(_problem(path, number, problem.kind, problem.detail))
            continue
        if not isinstance(ann, Equivalence):
            if ann.id in known:
                problems.append(_problem(path, number, "duplicate id", f"id {ann.id}"))
                continue
            known[ann.id] = ann
        kept.append((number, ann))
    kept, dangling = _drop_dangling(kept, known, path)
    problems.extend(dangling)
    doc = Document(doc_id, text)
    for _, ann in kept:
        if isinstance(ann, Equivalence):
            doc.equivalences.append(ann)
            doc.order.append("*")
        else:
            getattr(doc, _FIELDS[type(ann)])[ann.id] = ann
            doc.order.append(ann.id)
    problems.sort(key=lambda problem: problem.line)
    return doc, problems


def _read_bytes(path: Path) -> bytes:
    """The bytes of a regular file; never waits on a FIFO nor reads a device without end."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise BratFormatError(str(path), None, "not a regular file")
            with open(fd, "rb", closefd=False) as stream:
                return stream.read()
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise BratFormatError(str(path), None, "missing file") from None
    except OSError as error:
        raise BratFormatError(str(path), None, "unreadable file", error.strerror or type(error).__name__) from None


def _decode(path: Path, encoding: str) -> str:
    data = _read_bytes(path)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise BratFormatError(str(path), line, "not UTF-8", f"byte offset {error.start}") from None


def read_text(txt_path: str | os.PathLike) -> str:
    """The text of a note (UTF-8, line ends kept, as offsets count them); ``BratFormatError`` naming the file (and
    the line of a byte that is not UTF-8) when it cannot be read."""
    return _decode(Path(txt_path), "utf-8")


def _read(txt_path: Path, ann_path: Path, doc_id: str) -> tuple[Document | None, list[BratProblem]]:
    try:
        text = _decode(txt_path, "utf-8")
        ann_text = _decode(ann_path, "utf-8-sig")
    except BratFormatError as error:
        return None, [BratProblem(error.path, error.line, error.kind, error.detail)]
    return _parse_ann(doc_id, text, ann_text, ann_path)


def read_document(txt_path: str | os.PathLike, ann_path: str | os.PathLike | None = None) -> Document:
    """Read one ``.txt`` and its ``.ann`` (default: beside it); ``doc_id`` is the file stem.

    Raises ``BratFormatError`` for the first problem found.
    """
    txt_path = Path(txt_path)
    ann_path = Path(ann_path) if ann_path is not None else txt_path.with_suffix(".ann")
    doc, problems = _read(txt_path, ann_path, txt_path.stem)
    if problems:
        raise problems[0].error()
    return doc


def read_corpus(directory: str | os.PathLike, *, collect_problems: bool = False) -> BratCorpus:
    """Read every ``*.ann`` under ``directory`` (recursively, sorted) with the ``.txt`` beside it.

    ``doc_id`` is the path relative to ``directory`` without suffix. Without ``collect_problems`` the
    first problem raises ``BratFormatError``; with it, all are collected (see the module docstring).
    """
    root = Path(directory)
    if not root.is_dir():
        raise NotADirectoryError(f"not a directory: {root}")
    corpus = BratCorpus()
    for ann_path in sorted(root.rglob("*.ann")):
        doc_id = ann_path.relative_to(root).with_suffix("").as_posix()
        doc, problems = _read(ann_path.with_suffix(".txt"), ann_path, doc_id)
        if problems and not collect_problems:
            raise problems[0].error()
        corpus.problems.extend(problems)
        if doc is not None:
            corpus.documents.append(doc)
    return corpus


def _format(ann: Annotation, doc: Document) -> str:
    match ann:
        case Entity():
            text = ann.text or " ".join(doc.text[start:end] for start, end in ann.spans)
            return f"{ann.id}\t{ann.type} {_format_spans(ann.spans)}\t{text}"
        case Relation():
            return f"{ann.id}\t{ann.type} {ann.arg1_role}:{ann.arg1} {ann.arg2_role}:{ann.arg2}"
        case Event():
            arguments = "".join(f" {role}:{ref}" for role, ref in ann.arguments)
            return f"{ann.id}\t{ann.type}:{ann.trigger}{arguments}"
        case Attribute():
            return f"{ann.id}\t{ann.name} {ann.target}" + (f" {ann.value}" if ann.value is not None else "")
        case Normalization():
            name = f"\t{ann.text}" if ann.text else ""
            return f"{ann.id}\t{ann.type} {ann.target} {ann.resource}:{ann.entry}{name}"
        case Note():
            return f"{ann.id}\t{ann.type} {ann.target}\t{ann.text}"
        case Equivalence():
            return f"*\t{ann.type} {' '.join(ann.members)}"
    raise TypeError(f"not a BRAT annotation: {type(ann).__name__}")


def format_ann(doc: Document) -> str:
    """The ``.ann`` text of ``doc``: ids in ``doc.order`` first, then the others by kind, LF line ends.

    An entity without text gets the document's text at its spans; a field holding a line break
    raises ``BratFormatError``.
    """
    by_id: dict[str, Annotation] = {}
    for name in _FIELDS.values():
        by_id.update(getattr(doc, name))
    equivalences = iter(doc.equivalences)
    ordered: list[Annotation] = []
    for key in doc.order:
        ann = next(equivalences, None) if key == "*" else by_id.pop(key, None)
        if ann is not None:
            ordered.append(ann)
    lines = [_format(ann, doc) for ann in [*ordered, *by_id.values(), *equivalences]]
    for line in lines:
        if "\n" in line or "\r" in line:
            raise BratFormatError(doc.doc_id, None, "line break in a field", "id " + line.partition("\t")[0])
    return "".join(line + "\n" for line in lines)


def write_document(doc: Document, directory: str | os.PathLike, *, write_text: bool = False) -> Path:
    """Write ``<directory>/<doc_id>.ann`` (and ``.txt`` with ``write_text``) atomically; returns the path.

    New files get the mode ``open()`` would give them (0o666 less the umask: set ``umask 077`` where notes are
    private); a replaced file keeps its own (see :mod:`clinical_prompt.atomic`).
    """
    ann_path = Path(directory) / f"{doc.doc_id}.ann"
    content = format_ann(doc)
    ann_path.parent.mkdir(parents=True, exist_ok=True)
    if write_text:
        atomic.write_text(ann_path.with_suffix(".txt"), doc.text)
    atomic.write_text(ann_path, content)
    return ann_path
