"""Seeded few-shot sampling and train/dev splits.

Samples are prefixes of one seeded shuffle of the items sorted by id, so the same seed gives the same
sample whatever the input order, and growing ``k`` only adds items (the k=10 sample is inside the k=20
one): learning curves over ``k`` are monotone in data.
"""
from __future__ import annotations

import random
from collections.abc import Iterable
from operator import attrgetter

from clinical_prompt.brat import Document
from clinical_prompt.corpus.sentences import sentence_documents

_BY_ID = attrgetter("doc_id")


def _shuffled(documents: Iterable[Document], seed: int) -> list[Document]:
    ordered = sorted(documents, key=_BY_ID)
    random.Random(seed).shuffle(ordered)
    return ordered


def _first(items: list[Document], k: int, what: str) -> list[Document]:
    if not 0 <= k <= len(items):
        raise ValueError(f"cannot sample {k} {what} from {len(items)}")
    return items[:k]


def sample_documents(documents: Iterable[Document], k: int, seed: int = 0) -> list[Document]:
    """``k`` documents drawn with ``seed``; the sample for a smaller ``k`` is a prefix of this one."""
    return _first(_shuffled(documents, seed), k, "documents")


def sample_sentences(
    documents: Iterable[Document], k: int, seed: int = 0, *, annotated_only: bool = False
) -> list[Document]:
    """``k`` sentences drawn with ``seed``, each as its own Document (see ``sentence_documents``);
    ``annotated_only`` draws only from sentences holding at least one entity. Nested in ``k`` as above."""
    sentences = [s for doc in documents for s in sentence_documents(doc) if s.entities or not annotated_only]
    return _first(_shuffled(sentences, seed), k, "sentences")


def train_dev_split(
    documents: Iterable[Document], dev_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Document], list[Document]]:
    """Split documents into (train, dev) with ``round(n * dev_fraction)`` dev documents; both sorted by id."""
    if not 0 <= dev_fraction < 1:
        raise ValueError(f"dev_fraction must be in [0, 1), got {dev_fraction}")
    shuffled = _shuffled(documents, seed)
    n_dev = round(len(shuffled) * dev_fraction)
    return sorted(shuffled[n_dev:], key=_BY_ID), sorted(shuffled[:n_dev], key=_BY_ID)
