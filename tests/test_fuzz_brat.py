"""Fuzzed BRAT input: seeded mutations of the bundled MACCROBAT documents drive the reader.

Each case starts from real documents whose text and notes are salted with ``SENTINEL``, mutates their
``.txt`` and ``.ann`` files (truncated lines, random offsets, bad ids, mixed encodings, huge lines, control
characters, files deleted, replaced by a directory or a FIFO, or removed between listing and reading) and reads
them with ``read_document`` and ``read_corpus(collect_problems=True)``. Every case must end in documents that are
sound, collected ``BratProblem``s or a ``BratFormatError`` naming a file of the case (and a line of it where the
problem is in a line), within ``CASE_SECONDS``; never another exception, and never the sentinel in a message.
A failing case is rebuilt alone by ``make_case(number)``.
"""
from __future__ import annotations

import dataclasses
import gc
import os
import random
import re
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest

from clinical_prompt.brat import (
    BratFormatError,
    BratProblem,
    Document,
    Entity,
    Note,
    format_ann,
    read_corpus,
    read_document,
)

SEED = 20240808
CASES = 1000
CASE_SECONDS = 1.0   # each case's reading, enforced by an alarm
TOTAL_SECONDS = 60.0
SENTINEL = "Zqxjsalt"  # salted into every note's text and annotator notes; never in a message
MACCROBAT = Path(__file__).resolve().parents[1] / "clinical_prompt" / "data" / "maccrobat2020"
FILE_KINDS = {"missing file", "unreadable file", "not a regular file"}
LINE_KINDS = {"not UTF-8", "malformed line", "unknown annotation kind", "duplicate id", "offset out of range",
              "start after end", "text mismatch", "missing reference"}
MAX_MESSAGE = 300  # characters of a message beyond its path
DIRECTORY, FIFO, DEVICE, LOOP = "directory", "fifo", "device", "loop"  # special file contents


@dataclass
class Line:
    """One ``.ann`` line; ``expect``: it must get a problem of its own; ``encoding`` it is written in."""

    text: str
    expect: bool = False
    encoding: str = "utf-8"


@dataclass
class Pair:
    """One document's files while it is mutated; ``fatal`` holds (suffix, kind) problems it must get."""

    name: str
    text: bytes
    lines: list[Line]
    txt: bytes | str | None = None  # after file mutations: bytes, a special content, or None (deleted)
    ann: bytes | str | None = None
    uncertain: bool = False  # a file mutation whose outcome is not known (line expectations no longer hold)
    fatal: list[tuple[str, str]] = field(default_factory=list)
    removed_after_listing: list[str] = field(default_factory=list)
    mutations: list[str] = field(default_factory=list)


@dataclass
class Case:
    number: int
    corpus_mode: bool
    pairs: list[Pair]
    mutations: list[str]

    def files(self) -> dict[str, bytes | str | None]:
        """Each file's name under the case directory and its content."""
        return {f"{pair.name}{suffix}": content for pair in self.pairs
                for suffix, content in ((".txt", pair.txt), (".ann", pair.ann))}

    def describe(self) -> str:
        mode = "read_corpus" if self.corpus_mode else "read_document"
        return f"case {self.number} ({mode}; {', '.join(self.mutations) or 'unmutated'})"


# --- sources: the bundled documents, salted -------------------------------------------------------------------

_SOURCES: list[Document] = []


def sources() -> list[Document]:
    if not _SOURCES:
        corpus = read_corpus(MACCROBAT, collect_problems=True)
        assert not corpus.problems and len(corpus.documents) == 200
        _SOURCES.extend(corpus.documents)
    return _SOURCES


def salted(doc: Document, rng: random.Random) -> tuple[bytes, list[Line]]:
    """``doc`` with the sentinel written over its text (at entity starts and elsewhere) and its notes."""
    text = list(doc.text)
    starts = [e.start for e in rng.sample(list(doc.entities.values()), min(3, len(doc.entities)))]
    for start in starts + [rng.randrange(len(text)) for _ in range(2)]:
        end = min(start + len(SENTINEL), len(text))
        text[start:end] = SENTINEL[:end - start]
    notes = {key: dataclasses.replace(note, text=SENTINEL) for key, note in doc.notes.items()}
    order = list(doc.order)
    if doc.entities:
        notes["#9001"] = Note("#9001", "AnnotatorNotes", next(iter(doc.entities)), f"{SENTINEL} checked")
        order.append("#9001")
    result = dataclasses.replace(
        doc, text="".join(text), notes=notes, order=order,
        entities={key: dataclasses.replace(e, text="") for key, e in doc.entities.items()})
    return result.text.encode(), [Line(line) for line in format_ann(result).split("\n")[:-1]]


# --- mutations of .ann lines ----------------------------------------------------------------------------------

BAD_IDS = ["", "T", "1", "T1a", "T 1", "T\u00e91", "T-1", "*1", "#", "T\x001", "\uff341", "T\u0661", "t1.5"]
UNKNOWN_IDS = ["X1", "Q7", "B3", "Z12"]
CONTROL = ["\x00", "\x01", "\x0b", "\x0c", "\x1b", "\x1c", "\x7f", "\x85", "\u2028", "\r", "\t", "\ufeff"]


def _random_line(pair: Pair, rng: random.Random, prefixes: str = "", expected: bool = True) -> Line | None:
    lines = [line for line in pair.lines
             if (not prefixes or line.text.startswith(tuple(prefixes))) and (expected or not line.expect)]
    return rng.choice(lines) if lines else None


def _id_of(line: Line) -> str:
    return line.text.partition("\t")[0]


def truncate_line(pair: Pair, rng: random.Random) -> None:
    if line := _random_line(pair, rng):
        line.text, line.expect = line.text[:rng.randrange(len(line.text) + 1)], False


def random_offsets(pair: Pair, rng: random.Random) -> None:
    line = _random_line(pair, rng, "T")
    if line is None:
        return
    ann_id, _, rest = line.text.partition("\t")
    type_, _, _ = rest.partition(" ")
    written = rest.partition("\t")[2]
    length = len(pair.text.decode())
    offsets, bad = rng.choice([
        (lambda: (f"{rng.randrange(1, 50) + 10} {rng.randrange(10)}", True)),                # start after end
        (lambda: (f"-{rng.randrange(1, 9)} 3", True)),                                       # negative
        (lambda: (f"0 {length + rng.randrange(2, 500)}", True)),                             # past the end
        (lambda: (f"{rng.randrange(length)} {rng.randrange(length)}", False)),               # anywhere
        (lambda: (f"{rng.randrange(9)}x {rng.randrange(9)}", True)),                         # not a number
        (lambda: ("1 2 3", True)),                                                          # three numbers
        (lambda: ("9" * rng.randrange(20, 4000) + " 1", True)),                             # huge number
        (lambda: ("1" * 5000 + " 1", True)),                                                # beyond int()'s digits
        (lambda: (";".join(f"{rng.randrange(length)} {length}" for _ in range(rng.randrange(2, 40))), False)),
        (lambda: ("0 1;", True)),                                                           # empty fragment
    ])()
    line.text, line.expect = f"{ann_id}\t{type_} {offsets}\t{written}", bad


def bad_id(pair: Pair, rng: random.Random) -> None:
    if line := _random_line(pair, rng):
        _, tab, rest = line.text.partition("\t")
        line.text, line.expect = rng.choice(BAD_IDS + UNKNOWN_IDS) + tab + rest, bool(rest.strip())


def duplicate_id(pair: Pair, rng: random.Random) -> None:
    """One line takes the id of another of its kind (not of a line whose problem other lines depend on)."""
    line, other = _random_line(pair, rng, "TREAMN#"), _random_line(pair, rng, "TREAMN#", expected=False)
    if line is not None and other is not None and line is not other and line.text[0] == other.text[0]:
        line.text = _id_of(other) + "\t" + line.text.partition("\t")[2]


def dangling_reference(pair: Pair, rng: random.Random) -> None:
    """A reference of an R, E, A, M, N, # or * line replaced by an id that never exists."""
    line = _random_line(pair, rng, "REAMN#*")
    if line is None:
        return
    ann_id, _, rest = line.text.partition("\t")
    fields, tab, tail = rest.partition("\t")
    tokens = fields.split(" ")
    refs = [i for i, token in enumerate(tokens) if (i or ann_id.startswith("E"))
            and re.fullmatch(r"[A-Za-z]+[0-9]+", token.rpartition(":")[2])]
    if refs:
        i = rng.choice(refs)
        role, colon, _ = tokens[i].rpartition(":")
        tokens[i] = role + colon + "T99999"
        line.text, line.expect = f"{ann_id}\t{' '.join(tokens)}{tab}{tail}", True


def dangling_chain(pair: Pair, rng: random.Random) -> None:
    """Relations, each referring to the next, the last to an id that never exists, in reverse file order.

    Their ids (``RR...``) have no prefix that is an id of the document, so a truncated chain line still fails.
    """
    entity = next((_id_of(line) for line in pair.lines if line.text.startswith("T")), "T1")
    size = rng.randrange(50, 3000)
    chain = [f"RR{900000 + k}\tChain Arg1:{entity} Arg2:{f'RR{900000 + k - 1}' if k else 'T99999'}"
             for k in range(size)]
    at = rng.randrange(len(pair.lines) + 1)
    pair.lines[at:at] = [Line(text, expect=True) for text in reversed(chain)]


def join_lines(pair: Pair, rng: random.Random) -> None:
    if len(pair.lines) > 1:
        at = rng.randrange(len(pair.lines) - 1)
        first, second = pair.lines[at], pair.lines.pop(at + 1)
        first.text, first.expect = first.text + second.text, False


def control_characters(pair: Pair, rng: random.Random) -> None:
    for _ in range(rng.randrange(1, 6)):
        if line := _random_line(pair, rng):
            at = rng.randrange(len(line.text) + 1)
            line.text, line.expect = line.text[:at] + rng.choice(CONTROL) + line.text[at:], False


def huge_line(pair: Pair, rng: random.Random) -> None:
    size = rng.randrange(50_000, 500_000)
    length = len(pair.text.decode())
    text, expect = rng.choice([
        ("x" * size, True),                                                                  # no id, no tab
        (f"T900001\tSign 0 0\t{'x' * size}", True),                                          # huge text field
        (f"T900002\tSign {';'.join([f'0 {length}'] * (size // 12))}\tx", True),              # many fragments
        (f"T{'7' * size}\tSign 5 2\tx", True),                                                # huge id
        (f"R900003\tRel {' '.join(['Arg1:T1'] * (size // 8))}", True),                       # many arguments
        (f"E900004\tEvent:{'T' * size}", True),                                               # huge reference
        ("\t" * size, False),                                                                # blank
    ])
    pair.lines.insert(rng.randrange(len(pair.lines) + 1), Line(text, expect))


def shuffle_lines(pair: Pair, rng: random.Random) -> None:
    rng.shuffle(pair.lines)


def delete_line(pair: Pair, rng: random.Random) -> None:
    if pair.lines:
        pair.lines.pop(rng.randrange(len(pair.lines)))


def duplicate_line(pair: Pair, rng: random.Random) -> None:
    if line := _random_line(pair, rng):
        pair.lines.insert(rng.randrange(len(pair.lines) + 1), Line(line.text))


def line_in_other_encoding(pair: Pair, rng: random.Random) -> None:
    if line := _random_line(pair, rng):
        line.encoding = rng.choice(["latin-1", "cp1252", "utf-16"])


def write_lines(pair: Pair) -> None:
    """Set ``pair.txt`` and ``pair.ann`` from the text and the lines, each line in its encoding."""
    pair.txt = pair.text
    pair.ann = b"".join(line.text.encode(line.encoding, errors="replace") + b"\n" for line in pair.lines)
    encodings = {line.encoding for line in pair.lines}
    if "utf-16" in encodings:  # a UTF-16 line starts with the bytes FF FE
        pair.fatal.append((".ann", "not UTF-8"))
    elif encodings - {"utf-8"}:
        pair.uncertain = True


LINE_MUTATIONS: list[Callable[[Pair, random.Random], None]] = [
    truncate_line, random_offsets, bad_id, duplicate_id, dangling_reference, dangling_chain, join_lines,
    control_characters, huge_line, shuffle_lines, delete_line, duplicate_line, line_in_other_encoding,
]


# --- mutations of whole files, after the lines are written ----------------------------------------------------

def _which(rng: random.Random) -> str:
    return rng.choice(["txt", "ann"])


def truncate_file(pair: Pair, rng: random.Random) -> None:
    which = _which(rng)
    data = getattr(pair, which)
    setattr(pair, which, data[:rng.randrange(len(data) + 1)])
    pair.uncertain = True


def reencode_file(pair: Pair, rng: random.Random) -> None:
    which, encoding = _which(rng), rng.choice(["latin-1", "cp1252", "utf-16", "utf-8-sig"])
    try:
        text = getattr(pair, which).decode("utf-8")
    except UnicodeDecodeError:  # an invalid byte written before is replaced
        text, pair.uncertain = getattr(pair, which).decode("utf-8", errors="replace"), True
    setattr(pair, which, text.encode(encoding, errors="replace"))
    if encoding == "utf-16":
        pair.fatal.append((f".{which}", "not UTF-8"))
    elif not (encoding == "utf-8-sig" and which == "ann"):  # a BOM before the annotations changes nothing
        pair.uncertain = True


def invalid_byte(pair: Pair, rng: random.Random) -> None:
    which = _which(rng)
    data = getattr(pair, which)
    at = rng.randrange(len(data) + 1)
    setattr(pair, which, data[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"]) + data[at:])
    pair.fatal.append((f".{which}", "not UTF-8"))


def control_bytes(pair: Pair, rng: random.Random) -> None:
    which = _which(rng)
    data = bytearray(getattr(pair, which))
    for _ in range(rng.randrange(1, 8)):
        data.insert(rng.randrange(len(data) + 1), rng.choice(b"\x00\x01\x08\x0b\x0c\x1b\x7f\r"))
    setattr(pair, which, bytes(data))
    pair.uncertain = True


def crlf(pair: Pair, rng: random.Random) -> None:
    which = _which(rng)
    setattr(pair, which, getattr(pair, which).replace(b"\n", b"\r\n"))
    pair.uncertain |= which == "txt"  # offsets count the CR; a CRLF .ann reads as LF


def replace_file(pair: Pair, rng: random.Random) -> None:
    """Delete a file or put a directory, a FIFO, a device or a symbolic link loop where it should be."""
    which = _which(rng)
    special = rng.choice([None, DIRECTORY] + ([FIFO, DEVICE, LOOP] if os.name == "posix" else []))
    setattr(pair, which, special)
    kind = {None: "missing file", LOOP: "unreadable file"}.get(special, "not a regular file")
    pair.fatal.append((f".{which}", kind))


def remove_after_listing(pair: Pair, rng: random.Random) -> None:
    which = _which(rng)
    pair.removed_after_listing.append(f".{which}")
    pair.fatal.append((f".{which}", "missing file"))


FILE_MUTATIONS: list[Callable[[Pair, random.Random], None]] = [
    truncate_file, reencode_file, invalid_byte, control_bytes, crlf, replace_file, remove_after_listing,
]


# --- building, writing and reading a case ---------------------------------------------------------------------

def make_case(number: int) -> Case:
    """Case ``number`` of the seeded sequence, the same on every run."""
    rng = random.Random(f"{SEED}-{number}")
    corpus_mode = rng.random() < 0.5
    docs = rng.sample(sources(), rng.randrange(1, 4) if corpus_mode else 1)
    file_choices = [m for m in FILE_MUTATIONS if corpus_mode or m is not remove_after_listing]
    case = Case(number, corpus_mode, [], [])
    for index, doc in enumerate(docs):
        text, lines = salted(doc, rng)
        pair = Pair(f"sub/{doc.doc_id}" if index == 2 else doc.doc_id, text, lines)
        case.pairs.append(pair)
        mutated = index == 0 or rng.random() < 0.7  # else a clean document beside mutated ones
        line_mutations = rng.sample(LINE_MUTATIONS, rng.choice([0, 1, 1, 2, 3])) if mutated else []
        file_mutations = rng.sample(file_choices, rng.choice([0, 0, 1, 1, 2] if line_mutations else [1, 2])) \
            if mutated else []
        for mutation in line_mutations:
            mutation(pair, rng)
            pair.mutations.append(mutation.__name__)
        write_lines(pair)
        for mutation in file_mutations:
            if pair.removed_after_listing or not (isinstance(pair.txt, bytes) and isinstance(pair.ann, bytes)):
                break  # a file is gone or special: nothing left to mutate
            mutation(pair, rng)
            pair.mutations.append(mutation.__name__)
        case.mutations += [f"{pair.name}: {name}" for name in pair.mutations]
    return case


def write_case(case: Case, directory: Path) -> None:
    for name, content in case.files().items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content == DIRECTORY:
            path.mkdir()
        elif content == FIFO:
            os.mkfifo(path)
        elif content == DEVICE:
            path.symlink_to("/dev/zero")
        elif content == LOOP:
            path.symlink_to(path.name)


class CaseTimeout(Exception):
    pass


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``CaseTimeout`` in the reader if it runs past ``seconds`` (where SIGALRM exists)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise CaseTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def removed_after_listing(paths: list[Path]) -> Iterator[None]:
    """``Path.rglob`` lists as usual, then ``paths`` are removed before the reader opens them."""
    rglob = Path.rglob

    def list_then_remove(self, pattern, *args, **kwargs):
        found = list(rglob(self, pattern, *args, **kwargs))
        for path in paths:
            path.unlink()
        return iter(found)

    with mock.patch.object(Path, "rglob", list_then_remove):
        yield


Outcome = tuple[list[Document], list[BratProblem], Document | BratFormatError | None]


def read_case(case: Case, directory: Path) -> Outcome:
    """``read_corpus(collect_problems=True)``; in document mode also ``read_document`` (its document or error)."""
    removed = [directory / f"{pair.name}{suffix}" for pair in case.pairs for suffix in pair.removed_after_listing]
    single = None
    with time_limit(CASE_SECONDS), removed_after_listing(removed):
        corpus = read_corpus(directory, collect_problems=True)
        if not case.corpus_mode:
            try:
                single = read_document(directory / f"{case.pairs[0].name}.txt")
            except BratFormatError as error:
                single = error
    return corpus.documents, corpus.problems, single


# --- what every outcome must satisfy --------------------------------------------------------------------------

def assert_sound(doc: Document) -> None:
    """Every kept annotation is in range, matches the text and refers to kept annotations."""
    for entity in doc.entities.values():
        assert all(0 <= start <= end <= len(doc.text) for start, end in entity.spans), entity.id
        fragments = [doc.text[start:end] for start, end in entity.spans]
        assert entity.text in (" ".join(fragments), "".join(fragments)), entity.id
    known = {**doc.entities, **doc.relations, **doc.events, **doc.attributes, **doc.normalizations, **doc.notes}
    for event in doc.events.values():
        assert isinstance(doc.entities.get(event.trigger), Entity), event.id
        assert all(ref in known for _, ref in event.arguments), event.id
    for relation in doc.relations.values():
        assert relation.arg1 in known and relation.arg2 in known, relation.id
    for ann in [*doc.attributes.values(), *doc.normalizations.values(), *doc.notes.values()]:
        assert ann.target in known, ann.id
    assert all(set(eq.members) <= known.keys() for eq in doc.equivalences)


def assert_well_named(problem: BratProblem, name: str, line_counts: dict[str, int | None]) -> None:
    """The problem names a file of the case, a line of it (or none for a file-level kind), no note text."""
    message = str(problem.error())
    assert name in line_counts, message
    assert problem.kind in FILE_KINDS | LINE_KINDS, message
    assert message.startswith(problem.path) and len(message) <= len(problem.path) + MAX_MESSAGE, message[:500]
    assert SENTINEL not in message and SENTINEL not in repr(problem), "note text in a message"
    if problem.kind in FILE_KINDS:
        assert problem.line is None, message
    else:
        assert isinstance(problem.line, int) and 1 <= problem.line <= line_counts[name], message


def _fatal(pair: Pair, suffix: str) -> tuple[str, None, str] | None:
    """The problem a file of ``pair`` must get: a removal outranks what was done to its content before."""
    kinds = [kind for fatal_suffix, kind in pair.fatal if fatal_suffix == suffix]
    if not kinds:
        return None
    return f"{pair.name}{suffix}", None, "missing file" if "missing file" in kinds else kinds[-1]


def expected_problems(pair: Pair, corpus_mode: bool) -> list[tuple[str, int | None, str | None]]:
    """(file, line or None, kind or None) the reader must report for ``pair``; a file problem hides the lines."""
    if corpus_mode and pair.ann is None:
        return []  # no .ann: the corpus has no such document
    txt_fatal, ann_fatal = (_fatal(pair, suffix) for suffix in (".txt", ".ann"))
    if txt_fatal:
        return [] if pair.uncertain and txt_fatal[2] == "not UTF-8" else [txt_fatal]
    if pair.uncertain:
        return []
    if ann_fatal:
        return [ann_fatal]
    return [(f"{pair.name}.ann", number, None) for number, line in enumerate(pair.lines, 1) if line.expect]


def check_case(case: Case, directory: Path, documents: list[Document], problems: list[BratProblem],
               single: Document | BratFormatError | None) -> None:
    reported = list(problems)
    if isinstance(single, BratFormatError):
        reported.append(BratProblem(single.path, single.line, single.kind, single.detail))
        assert not problems or str(problems[0].error()) == str(single)
    elif single is not None:
        assert not problems and documents == [single]
    line_counts = {name: content.count(b"\n") + 1 if isinstance(content, bytes) else None
                   for name, content in case.files().items()}
    prefix, found = f"{directory}{os.sep}", set()
    for problem in reported:
        assert problem.path.startswith(prefix), str(problem.error())
        name = problem.path[len(prefix):].replace(os.sep, "/")
        assert_well_named(problem, name, line_counts)
        found.add((name, problem.line, problem.kind))
    for doc in documents:
        assert_sound(doc)
    unread = {name.rpartition(".")[0] for name, _, kind in found if kind in FILE_KINDS or kind == "not UTF-8"}
    found_lines, found_kinds = {(name, line) for name, line, _ in found}, {(name, kind) for name, _, kind in found}
    for pair in case.pairs:
        for name, line, kind in expected_problems(pair, case.corpus_mode):
            assert (name, line) in found_lines if kind is None else (name, kind) in found_kinds, \
                f"no problem {kind or ''} at {name}:{line}"
        read = pair.ann is not None and pair.name not in unread
        assert (pair.name in {d.doc_id for d in documents}) == read, pair.name
        if not pair.mutations:
            assert not any(name.startswith(pair.name + ".") for name, _, _ in found), f"{pair.name} is clean"


def test_salted_sources_read_clean_and_hold_the_sentinel(tmp_path: Path) -> None:
    """Unmutated salted documents have no problem, so every problem in a case comes from its mutations."""
    rng = random.Random(SEED)
    for doc in sources():
        text, lines = salted(doc, rng)
        (tmp_path / f"{doc.doc_id}.txt").write_bytes(text)
        (tmp_path / f"{doc.doc_id}.ann").write_text("".join(line.text + "\n" for line in lines))
        assert SENTINEL.encode() in text and any(SENTINEL in line.text for line in lines), doc.doc_id
    corpus = read_corpus(tmp_path, collect_problems=True)
    assert corpus.problems == [] and len(corpus.documents) == len(sources())


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    """Objects made before the cases (torch, pytest) leave the collector's view, so a case's time is its own."""
    gc.freeze()
    yield
    gc.unfreeze()


def test_fuzzed_files_end_in_problems_or_sound_documents(tmp_path: Path, frozen_heap: None) -> None:
    started, slowest, kinds, mutations = time.perf_counter(), 0.0, Counter(), Counter()
    for number in range(CASES):
        case = make_case(number)
        directory = tmp_path / str(number)
        write_case(case, directory)
        read_started = time.perf_counter()
        try:
            outcome = read_case(case, directory)
        except Exception as error:
            pytest.fail(f"{case.describe()}: {type(error).__name__} escaped the reader")
        slowest = max(slowest, time.perf_counter() - read_started)
        try:
            check_case(case, directory, *outcome)
        except AssertionError as error:
            pytest.fail(f"{case.describe()}: {error}")
        kinds.update(p.kind for p in outcome[1])
        mutations.update(m.partition(": ")[2] for m in case.mutations)
        shutil.rmtree(directory)
    seconds = time.perf_counter() - started
    print(f"{CASES} fuzzed cases in {seconds:.1f} s, slowest read {slowest:.3f} s, problems {dict(kinds)}")
    assert seconds < TOTAL_SECONDS
    assert set(kinds) == FILE_KINDS | LINE_KINDS  # every kind is met
    assert set(mutations) == {m.__name__ for m in LINE_MUTATIONS + FILE_MUTATIONS}
    assert min(mutations.values()) >= 20, mutations
