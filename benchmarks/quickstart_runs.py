"""The quickstart's notes and runs, shared by the benchmarks that study its defaults: the bundled notes in the order
its split takes them, the validation notes before the held-out ones, a one-epoch ``fit`` and end-to-end scores."""
from __future__ import annotations

import tempfile

from clinical_prompt.brat import Document
from clinical_prompt.evaluation import evaluate_documents
from clinical_prompt.extractors import Extractor
from clinical_prompt.fit import fit
from clinical_prompt.quickstart import QuickstartConfig
from clinical_prompt.readers import read_documents
from clinical_prompt.schema import TaskSchema
from clinical_prompt.training import TrainingConfig, TrainingResult


def bundled_notes(config: QuickstartConfig, schema: TaskSchema) -> list[Document]:
    """``config``'s corpus mapped onto ``schema``, sorted by name as the quickstart splits it."""
    return sorted((schema.map_document(d) for d in read_documents(config.corpus)), key=lambda d: d.doc_id)


def validation_notes(documents: list[Document], validation: int, test: int) -> list[Document]:
    """The ``validation`` notes just before the last ``test`` (held out): neither trained on nor held out."""
    return documents[len(documents) - test - validation: len(documents) - test]


def fit_one_epoch(extractor: Extractor, documents: list[Document], config: QuickstartConfig) -> TrainingResult:
    """``extractor`` trained one epoch on ``documents`` by ``fit`` with ``config``'s batch, seed and rates, no dev."""
    with tempfile.TemporaryDirectory() as output:
        training = TrainingConfig(output_dir=output, num_epochs=1, per_device_batch_size=config.batch_size,
                                  seed=config.seed, load_best_at_end=False, eval_every_epoch=False,
                                  save_every_epoch=False)
        return fit(extractor, documents, None, training,
                   learning_rates={"head": config.head_lr, "prompt": config.prompt_lr})


def end_to_end_scores(extractor: Extractor, documents: list[Document]) -> dict:
    """The evaluation of ``extractor``'s end-to-end predictions on ``documents``."""
    return evaluate_documents({d.doc_id: d for d in documents}, {d.doc_id: d for d in extractor.extract(documents)})
