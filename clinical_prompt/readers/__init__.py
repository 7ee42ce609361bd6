"""Corpus readers: every supported on-disk format becomes a list of :class:`clinical_prompt.brat.Document`.

=================  ==========================================================================================
format             path
=================  ==========================================================================================
``brat``           a folder of ``.txt`` / ``.ann`` pairs (``bundled:maccrobat2020`` names the bundled corpus)
``ade-corpus-v2``  the ADE-Corpus-V2 folder (``DRUG-AE.rel``, ``DRUG-DOSE.rel``, ``ADE-NEG.txt``)
``psytar-conll``   one PsyTAR CoNLL file (``token<TAB>BIO-tag``, a blank line between sentences)
=================  ==========================================================================================

Malformed input raises :class:`~clinical_prompt.brat.BratFormatError` naming the file and line, never the text.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from clinical_prompt.brat import Document, read_corpus
from clinical_prompt.readers.ade import read_ade_corpus
from clinical_prompt.readers.psytar import read_psytar_conll

__all__ = [
    "BUNDLED",
    "BUNDLED_CORPUS",
    "FORMATS",
    "read_ade_corpus",
    "read_documents",
    "read_psytar_conll",
    "resolve_corpus_path",
]

logger = logging.getLogger(__name__)

FORMATS = ("brat", "ade-corpus-v2", "psytar-conll")
BUNDLED_CORPUS = Path(__file__).parent.parent / "data" / "maccrobat2020"  # MACCROBAT2020, shipped in the package
BUNDLED = {"bundled:maccrobat2020": BUNDLED_CORPUS}


def resolve_corpus_path(path: str | os.PathLike) -> Path:
    """``path`` as a filesystem path (``bundled:maccrobat2020`` is the corpus shipped in the package)."""
    return BUNDLED.get(str(path), Path(path))


def read_documents(path: str | os.PathLike, format: str = "brat") -> list[Document]:
    """The documents at ``path`` in ``format`` (one of :data:`FORMATS`), unmapped.

    BRAT files with problems are skipped or read in part, as ``read_corpus(collect_problems=True)`` does; the
    count of problems is logged.
    """
    resolved = resolve_corpus_path(path)
    if format == "brat":
        corpus = read_corpus(resolved, collect_problems=True)
        if corpus.problems:
            logger.warning("%s: %d problems (see `clinical-prompt corpus stats`)", resolved, len(corpus.problems))
        return corpus.documents
    if format == "ade-corpus-v2":
        return read_ade_corpus(resolved)
    if format == "psytar-conll":
        return read_psytar_conll(resolved)
    raise ValueError(f"unknown corpus format {format!r}; use one of: {', '.join(FORMATS)}")
