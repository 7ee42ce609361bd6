"""Extraction split across the processes of an ``accelerate launch``: each document is predicted once.

Every process predicts its shard (documents ``rank, rank + N, ...``), the shards are gathered
(``accelerate.utils.gather_object``) and every process gets all predictions in input order, so scores computed from
them count each document exactly once. In a single process this is ``extractor.extract(documents)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from accelerate import PartialState
from accelerate.utils import gather_object, parse_flag_from_env

from clinical_prompt.brat import Document
from clinical_prompt.extractors.base import Extractor


def process_state() -> PartialState:
    """accelerate's state of this process. The first state made decides for the whole process, so this one honours
    ``ACCELERATE_USE_CPU`` as ``Accelerator()`` does: a launch of several CPU processes stays distributed."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


@dataclass(frozen=True)
class GatheredPredictions:
    """Predicted documents in input order, and how many documents each process predicted."""

    documents: list[Document]
    per_process: list[int]


def extract_documents(
    extractor: Extractor, documents: Sequence[Document], *, batch_size: int = 32
) -> GatheredPredictions:
    """``extractor.extract`` over ``documents``, sharded by process when several run (see the module docstring)."""
    state = process_state()
    if state.num_processes == 1:
        return GatheredPredictions(extractor.extract(documents, batch_size=batch_size), [len(documents)])
    shard = list(documents[state.process_index :: state.num_processes])
    predicted = extractor.extract(shard, batch_size=batch_size) if shard else []
    gathered = gather_object([(state.process_index, len(shard), predicted)])
    by_id: dict[str, Document] = {}
    for _, _, predictions in gathered:
        for document in predictions:
            if document.doc_id in by_id:
                raise RuntimeError(f"document {document.doc_id!r} was predicted by more than one process")
            by_id[document.doc_id] = document
    missing = [d.doc_id for d in documents if d.doc_id not in by_id]
    if missing:
        raise RuntimeError(f"{len(missing)} documents were predicted by no process, e.g. {missing[0]!r}")
    per_process = [count for _, count, _ in sorted(gathered, key=lambda item: item[0])]
    return GatheredPredictions([by_id[d.doc_id] for d in documents], per_process)
