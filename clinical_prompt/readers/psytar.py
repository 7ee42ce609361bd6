"""PsyTAR (Zolnoori et al. 2019) in its CoNLL conversion: patient reviews of psychiatric drugs, one token and
its BIO tag per line (``token<TAB>tag``), a blank line between sentences; types ``ADR``, ``WD``, ``SSI``, ``DI``.

Each sentence becomes a Document ``{file stem}-{n:05d}`` whose text is its tokens joined by single spaces (the
conversion kept no original spacing). An ``I-`` tag that does not continue an entity of its type starts one.
"""
from __future__ import annotations

import os
from pathlib import Path

from clinical_prompt.brat import BratFormatError, Document, Entity


def _document(doc_id: str, tokens: list[tuple[str, str]]) -> Document:
    text, entities = "", {}
    open_type, start, end = None, 0, 0

    def close() -> None:
        if open_type is not None:
            key = f"T{len(entities) + 1}"
            entities[key] = Entity(key, open_type, ((start, end),), text[start:end])

    for token, tag in tokens:
        position = len(text) + (1 if text else 0)
        text = f"{text} {token}" if text else token
        prefix, _, type_name = tag.partition("-")
        if prefix == "I" and open_type == type_name:
            end = position + len(token)
            continue
        close()
        open_type = type_name if prefix in ("B", "I") else None
        start, end = position, position + len(token)
    close()
    return Document(doc_id, text, entities=entities)


def read_psytar_conll(path: str | os.PathLike) -> list[Document]:
    """The sentences of one PsyTAR CoNLL file as Documents (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a file; expected a PsyTAR CoNLL file such as data/all/train.txt")
    documents: list[Document] = []
    tokens: list[tuple[str, str]] = []

    def flush() -> None:
        if tokens:
            documents.append(_document(f"{path.stem}-{len(documents) + 1:05d}", tokens))
            tokens.clear()

    with path.open(encoding="utf-8", newline="") as stream:
        for number, line in enumerate(stream, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                flush()
                continue
            fields = line.split("\t")
            tag = fields[-1]
            if len(fields) != 2 or not fields[0].strip() or not (tag == "O" or tag[:2] in ("B-", "I-") and tag[2:]):
                raise BratFormatError(
                    str(path), number, "malformed CoNLL line", "expected token<TAB>O, B-TYPE or I-TYPE"
                )
            tokens.append((fields[0], tag))
    flush()
    return documents
