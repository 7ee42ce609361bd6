"""Extraction over note files: each note to its adapter, notes streamed through an AdapterBank, one ``.ann`` each.

Notes are ``.txt`` files (directories are searched recursively); a note's ``doc_id`` is its path relative to the
directory given, without ``.txt`` (a file given directly: its name), and its predictions go to
``OUTPUT/<doc_id>.ann``, written atomically: an existing file is replaced whole or left as it was. A note that cannot
be read (not UTF-8, not a regular file) is reported by file, line and byte offset, never by its text, and the others
go on.
"""
from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from clinical_prompt.bank import AdapterBank
from clinical_prompt.brat import BratFormatError, Document, read_text, write_document
from clinical_prompt.errors import ClinicalPromptError

NOTE_SUFFIX = ".txt"


class NoteSelectionError(ClinicalPromptError, ValueError):
    """The notes or adapter choices given cannot be served: no notes, two notes with one id, or a note no rule
    assigns to a loaded adapter."""


@dataclass(frozen=True)
class NoteFile:
    """A note to extract: its file, its ``doc_id`` and the path that ``--adapter-for`` patterns match."""

    path: Path
    doc_id: str
    matched_path: str


def find_notes(inputs: Sequence[str | os.PathLike]) -> list[NoteFile]:
    """The ``.txt`` notes under each directory (recursively, sorted) and each file of ``inputs``, in that order."""
    notes: list[NoteFile] = []
    for given in map(Path, inputs):
        if given.is_dir():
            for path in sorted(given.rglob(f"*{NOTE_SUFFIX}")):
                relative = path.relative_to(given).as_posix()
                notes.append(NoteFile(path, relative[: -len(NOTE_SUFFIX)], relative))
        elif given.exists():
            notes.append(NoteFile(given, given.stem, given.name))
        else:
            raise FileNotFoundError(f"{given}: no such note or directory")
    if not notes:
        raise NoteSelectionError(f"no {NOTE_SUFFIX} notes in {', '.join(map(str, inputs))}")
    seen: dict[str, Path] = {}
    for note in notes:
        if note.doc_id in seen:
            raise NoteSelectionError(f"{seen[note.doc_id]} and {note.path} would both write {note.doc_id}.ann")
        seen[note.doc_id] = note.path
    return notes


def choose_adapters(notes: Sequence[NoteFile], rules: Sequence[tuple[str, str]], names: Sequence[str]) -> list[str]:
    """The adapter of each note: the first ``(glob, name)`` rule whose glob matches its ``matched_path``, else the
    only adapter when there is one."""
    for _, name in rules:
        if name not in names:
            raise NoteSelectionError(f"--adapter-for names adapter {name!r}, which is not loaded ({', '.join(names)})")
    chosen = []
    for note in notes:
        name = next((name for glob, name in rules if fnmatch.fnmatchcase(note.matched_path, glob)), None)
        if name is None and len(names) == 1:
            name = names[0]
        if name is None:
            raise NoteSelectionError(f"{note.path}: no --adapter-for pattern matches it, and {len(names)} adapters "
                                     "are loaded")
        chosen.append(name)
    return chosen


def run_extract(
    base: str,
    adapters: Sequence[tuple[str, str]],
    inputs: Sequence[str],
    output: str | os.PathLike,
    rules: Sequence[tuple[str, str]] = (),
    *,
    batch_size: int = 32,
    notes_per_pass: int = 64,
    token: str | None = None,
) -> int:
    """Extract every note of ``inputs`` with its adapter into ``output``; exit status 0, or 1 when some notes could
    not be read (each is reported on stderr, the rest are written). Each adapter is a local folder or a hub repository
    ``ORG/NAME[@REVISION]``, pulled with ``token`` (default: ``HF_TOKEN``)."""
    notes = find_notes(inputs)
    names = [name for name, _ in adapters]
    if len(set(names)) != len(names):
        raise NoteSelectionError(f"--adapter names {names} repeat a name")
    chosen = choose_adapters(notes, rules, names)
    bank = AdapterBank(base)
    for name, source in adapters:
        bank.add(name, source, token=token)
    unreadable: list[BratFormatError] = []
    # oneDNN, which runs torch's CPU GELU, keeps memory for every input shape it meets (about 2.5 MiB per batch shape
    # with MiniLM, not all given back when its cache evicts), so a long run over notes of many lengths grows without
    # end; torch's own kernels are as fast here (benchmarks/extract_load.py)
    with torch.backends.mkldnn.flags(enabled=False), tqdm(
        total=len(notes), desc="extracting", unit="note", file=sys.stderr, disable=None
    ) as progress:
        for begin in range(0, len(notes), notes_per_pass):
            documents, their_adapters = [], []
            for note, name in zip(notes[begin : begin + notes_per_pass], chosen[begin : begin + notes_per_pass]):
                try:
                    documents.append(Document(note.doc_id, read_text(note.path)))
                    their_adapters.append(name)
                except BratFormatError as error:
                    unreadable.append(error)
                    progress.write(f"clinical-prompt: skipped {error}", file=sys.stderr)
            for predicted in bank.extract(documents, their_adapters, batch_size=batch_size):
                write_document(predicted, output)
            progress.update(min(notes_per_pass, len(notes) - begin))
    print(f"wrote {len(notes) - len(unreadable)} .ann files to {output}")
    if unreadable:
        print(f"clinical-prompt: {len(unreadable)} of {len(notes)} notes could not be read (listed above)",
              file=sys.stderr)
    return 1 if unreadable else 0
