"""Train/test splits of a corpus, mapped onto a schema: a test folder of its own, or the last documents held out.

``maccrobat`` in the benchmarks is the held-out kind (first 150 documents by sorted id train, the last 50 test);
``ddi`` has its own ``Test`` folder.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from clinical_prompt.brat import Document
from clinical_prompt.corpus.sampling import sample_documents
from clinical_prompt.readers import read_documents
from clinical_prompt.schema import TaskSchema


def read_mapped(path: str | os.PathLike, schema: TaskSchema, *, format: str = "brat") -> list[Document]:
    """The documents at ``path`` (in ``format``, see :mod:`clinical_prompt.readers`) mapped onto ``schema``,
    sorted by id."""
    return sorted((schema.map_document(d) for d in read_documents(path, format)), key=lambda d: d.doc_id)


def hold_out(documents: Sequence[Document], test_documents: int) -> tuple[list[Document], list[Document]]:
    """(train, test): the last ``test_documents`` documents by sorted id are the test split."""
    if not 0 < test_documents < len(documents):
        raise ValueError(f"cannot hold out {test_documents} test documents of {len(documents)}")
    ordered = sorted(documents, key=lambda d: d.doc_id)
    return ordered[:-test_documents], ordered[-test_documents:]


def load_split(
    schema: TaskSchema,
    train: str | os.PathLike | None,
    test: str | os.PathLike | None = None,
    *,
    format: str = "brat",
    test_documents: int | None = None,
    annotated_only: bool = False,
    seed: int = 0,
) -> tuple[list[Document], list[Document]]:
    """Mapped (train, test) documents.

    With ``test``, that path is the test split (a seeded sample of ``test_documents`` of it when given); without
    it, the last ``test_documents`` of ``train`` by sorted id are held out. ``annotated_only`` drops training
    documents without a concept of the schema; the test split keeps every document. Without ``train`` (a corpus
    only tested on) the training split is empty.
    """
    documents = read_mapped(train, schema, format=format) if train is not None else []
    if test is None:
        if test_documents is None:
            raise ValueError("without a test path, test_documents says how many training documents to hold out")
        train_docs, test_docs = hold_out(documents, test_documents)
    else:
        train_docs, test_docs = documents, read_mapped(test, schema, format=format)
        if test_documents is not None:
            test_docs = sorted(sample_documents(test_docs, test_documents, seed=seed), key=lambda d: d.doc_id)
    return [d for d in train_docs if d.entities or not annotated_only], test_docs
