"""The steps every recipe shares: corpus splits, building and training one extractor, scoring it on test sets
across processes, and the figures of a run (trainable parameters, adapter bytes, train time, peak memory).

Under ``accelerate launch`` every process runs the recipe: all of them read the data and build the same extractor
(same seed), training shards the rows, extraction shards the documents
(:func:`clinical_prompt.distributed.extract_documents`), and only the main process writes files.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import resource
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object

from clinical_prompt.brat import Document
from clinical_prompt.corpus import load_split, sample_documents, train_dev_split
from clinical_prompt.distributed import GatheredPredictions, extract_documents, process_state
from clinical_prompt.evaluation import evaluate_documents
from clinical_prompt.extractors import build_extractor
from clinical_prompt.extractors.base import Extractor
from clinical_prompt.extractors.mrc import prompt_block_names, query_texts
from clinical_prompt.fit import fit
from clinical_prompt.prompts import ClinicalPromptConfig
from clinical_prompt.recipes.config import ConfigError, DataConfig, ModelConfig, PromptSection, TrainingSection
from clinical_prompt.recipes.metadata import finished, run_metadata, write_run_metadata
from clinical_prompt.schema import TaskSchema, load_schema
from clinical_prompt.strategies import get_strategy
from clinical_prompt.training import TrainingResult

logger = logging.getLogger("clinical_prompt.recipes")

SCORE_COLUMNS = ("concept_strict_f1", "concept_lenient_f1", "relation_strict_f1", "relation_lenient_f1")


@dataclass
class Splits:
    """A corpus mapped onto its schema: the training pool (dev documents taken out), dev and test documents."""

    schema: TaskSchema
    pool: list[Document]
    dev: list[Document]
    test: list[Document]

    def training_sample(self, data: DataConfig, seed: int) -> list[Document]:
        """``data.train_documents`` documents of the pool (seeded); the whole pool when it holds no more."""
        if data.train_documents is None:
            return self.pool
        return sample_documents(self.pool, min(data.train_documents, len(self.pool)), seed=seed)


def load_splits(data: DataConfig, seed: int, key: str = "data") -> Splits:
    """Read and map ``data`` (the config section at ``key``); dev documents (``dev_fraction`` of the training
    documents, seeded) are taken out of the training pool before any sample is drawn from it. A schema that maps
    none of the corpus's annotations is refused (``ConfigError``)."""
    schema = load_schema(data.schema)
    train, test = load_split(schema, data.train, data.test, format=data.format, test_documents=data.test_documents,
                             annotated_only=data.annotated_only, seed=seed)
    if not any(doc.entities for doc in (*train, *test)):
        raise ConfigError(f"{key}.schema", f"schema {schema.name!r} maps no annotation of the "
                          f"{len(train) + len(test)} documents read; check its mapping against the corpus's types "
                          "(clinical-prompt corpus stats)")
    pool, dev = train_dev_split(train, data.dev_fraction, seed=seed)
    return Splits(schema, pool, dev, test)


def is_main_process() -> bool:
    return process_state().is_main_process


def num_processes() -> int:
    return process_state().num_processes


def wait_for_everyone() -> None:
    process_state().wait_for_everyone()


def prompt_config(schema: TaskSchema, prompt: PromptSection) -> ClinicalPromptConfig:
    """The soft prompt of a ``prompt`` section over ``schema``'s query types (``query`` initialization takes each
    block's hard query)."""
    blocks = prompt_block_names(schema, prompt.sharing)
    texts = query_texts(schema, prompt.sharing) if prompt.prompt_init == "query" else None
    return ClinicalPromptConfig(
        prompt_blocks=blocks, num_virtual_tokens=prompt.num_virtual_tokens, depth=prompt.depth,
        prompt_start_layer=prompt.start_layer,
        reparameterization=prompt.reparameterization, encoder_hidden_size=prompt.encoder_hidden_size,
        prompt_init=prompt.prompt_init, prompt_init_texts=texts, prompt_dropout=prompt.prompt_dropout,
    )


def build(schema: TaskSchema, strategy: str, backbone: str, model: ModelConfig, prompt: PromptSection,
          seed: int) -> Extractor:
    """A new extractor, its weights drawn with ``seed``."""
    spec = get_strategy(strategy)
    torch.manual_seed(seed)
    if spec.input_format == "bio":
        return build_extractor(strategy, schema, backbone, max_length=model.max_length)
    return build_extractor(
        strategy, schema, backbone, max_length=model.max_length, negative_ratio=model.negative_ratio,
        head_dropout=model.head_dropout, quantization=model.quantization,
        prompt_config=prompt_config(schema, prompt) if spec.uses_soft_prompts else None,
        prompt_sharing=prompt.sharing if spec.uses_soft_prompts else "per-type",
    )


def learning_rates(training: TrainingSection, strategy: str) -> dict[str, float]:
    """The configured rates of the parts ``strategy`` trains (the others keep the strategy's defaults)."""
    defaults = get_strategy(strategy).learning_rates()
    rates = {"backbone": training.backbone_lr, "head": training.head_lr, "prompt": training.prompt_lr}
    return {part: rate for part, rate in rates.items() if rate is not None and defaults[part] is not None}


def train(extractor: Extractor, train_docs: Sequence[Document], dev_docs: Sequence[Document],
          training: TrainingSection, run_dir: Path) -> TrainingResult:
    """:func:`clinical_prompt.fit.fit` with the ``training`` section, checkpoints in ``run_dir/checkpoints``
    (removed afterwards unless ``keep_checkpoints``); no dev scoring without dev documents."""
    config = training.training_config(run_dir, dev=bool(dev_docs))
    result = fit(extractor, train_docs, dev_docs or None, config,
                 learning_rates=learning_rates(training, extractor.strategy), eval_batch_size=training.eval_batch_size)
    wait_for_everyone()
    if not training.keep_checkpoints and is_main_process():
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return result


def score(
    extractor: Extractor, documents: Sequence[Document], batch_size: int
) -> tuple[dict[str, Any], GatheredPredictions]:
    """The n2c2 evaluation of ``extractor`` on gold ``documents`` (each predicted once, across processes), and
    the predictions."""
    predictions = extract_documents(extractor, documents, batch_size=batch_size)
    scores = evaluate_documents({d.doc_id: d for d in documents}, {d.doc_id: d for d in predictions.documents})
    return scores, predictions


def f1_columns(scores: Mapping[str, Any], schema: TaskSchema, prefix: str = "") -> dict[str, float | None]:
    """Micro strict and lenient F1 of concepts and relations, as result-table columns; the relation columns are
    ``None`` (not scored) where ``schema`` has no relation types."""
    return {
        f"{prefix}{kind[:-1]}_{mode}_f1": scores[kind][mode]["micro"]["f1"] if kind == "concepts" or schema.relations
        else None
        for kind in ("concepts", "relations") for mode in ("strict", "lenient")
    }


def trainable_parameters(extractor: Extractor) -> int:
    return sum(p.numel() for p in extractor.parameters() if p.requires_grad)


def saved_bytes(extractor: Extractor) -> int:
    """Bytes that ``save_pretrained`` writes for ``extractor``: the adapter of a frozen strategy, else the
    backbone too."""
    with tempfile.TemporaryDirectory(prefix="clinical-prompt-size-") as directory:
        extractor.save_pretrained(directory)
        return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


def reset_peak_memory() -> None:
    """Start a new peak-memory measurement: the GPU's peak statistics, on Linux the process's peak resident set
    (after handing memory freed by earlier runs back to the system, so that it does not count)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux: peak_memory_bytes falls back to the peak since the process started


def peak_memory_bytes() -> int:
    """Peak memory since :func:`reset_peak_memory`, the largest over processes: GPU memory allocated where a GPU
    is used, else the resident set (``VmHWM``; ``ru_maxrss`` where /proc is missing)."""
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _resident_peak()
    return max(gather_object([peak])) if num_processes() > 1 else peak


def _resident_peak() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def run_cell(
    name: str,
    schema: TaskSchema,
    strategy: str,
    backbone: str,
    model: ModelConfig,
    prompt: PromptSection,
    training: TrainingSection,
    train_docs: Sequence[Document],
    dev_docs: Sequence[Document],
    test_sets: Mapping[str, Sequence[Document]],
    run_dir: Path,
    *,
    seed: int | None = None,
) -> dict[str, Any]:
    """Train one extractor and score it on each test set; one result row.

    The row holds the F1 columns of each test set (prefixed ``{set}_`` unless the only set is ``test``), the
    epochs run, trainable parameters, adapter bytes, train seconds and peak memory.
    """
    logger.info("%s: training %s on %s (%d documents, %d dev)", name, strategy, backbone, len(train_docs),
                len(dev_docs))
    reset_peak_memory()
    extractor = build(schema, strategy, backbone, model, prompt, training.seed if seed is None else seed)
    result = train(extractor, train_docs, dev_docs, training, run_dir)
    peak = peak_memory_bytes()
    row: dict[str, Any] = {}
    for set_name, documents in test_sets.items():
        scores, _ = score(extractor, documents, training.eval_batch_size)
        row.update(f1_columns(scores, schema, "" if list(test_sets) == ["test"] else f"{set_name}_"))
    row.update({
        "epochs_run": len(result.history),
        "trainable_parameters": trainable_parameters(extractor),
        "adapter_mib": round(saved_bytes(extractor) / 2**20, 3) if is_main_process() else None,
        "train_seconds": round(result.train_seconds, 1),
        "peak_memory_mib": round(peak / 2**20),
    })
    return row


def begin_run(recipe: str, config: Any) -> dict[str, Any]:
    """The run's metadata; the main process writes it to ``output_dir/run.json`` before any work."""
    metadata = run_metadata(recipe, config, num_processes=num_processes())
    if is_main_process():
        write_run_metadata(config.output_dir, metadata)
        logger.info("%s: writing to %s", recipe, config.output_dir)
    return metadata


def end_run(config: Any, metadata: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    """Record what the run produced in ``run.json`` (main process); ``outputs``."""
    if is_main_process():
        write_run_metadata(config.output_dir, finished(metadata, outputs))
    return outputs


GENERIC_PATH_PARTS = frozenset({"train", "test", "dev", "valid", "all", "data", "brat", "files"})


def corpus_name(path: str | None) -> str:
    """A corpus's short name for tables and model cards: the bundled corpus's name, else the innermost part of the
    path that is not a generic one such as ``Train`` or ``data/all/test.txt``."""
    text = str(path)
    if text.startswith("bundled:"):
        return text.partition(":")[2]
    location = Path(text)
    parts = [part for part in location.parts[:-1] if part not in ("..", ".", "/")]
    parts.append(location.stem if location.is_file() else location.name)
    return next((part for part in reversed(parts) if part.lower() not in GENERIC_PATH_PARTS), location.name)
