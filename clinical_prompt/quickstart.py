"""The main job on the embedded defaults: a frozen-backbone soft-prompt adapter for one institution.

On the bundled MACCROBAT corpus (``maccrobat-med`` schema) and the offline MiniLM backbone it trains the
adapter, scores it on held-out notes (n2c2 strict and lenient), writes the held-out predictions as BRAT files
and prints where everything is. The defaults are sized to finish in minutes on two CPU cores; the same job
takes a real backbone (``--backbone UFNLP/gatortron-base``), your own BRAT folder and schema, and more data.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clinical_prompt.readers import BUNDLED_CORPUS

if TYPE_CHECKING:
    from clinical_prompt.extractors import Extractor
    from clinical_prompt.schema import TaskSchema

BUNDLED_SCHEMA = "maccrobat-med"


@dataclass(frozen=True)
class QuickstartConfig:
    """What the main job trains on and how long; the defaults are the embedded ones, sized for about ten minutes on
    two CPU cores: prompts from the middle layer (3 of MiniLM's 6; the lower layers run once per sentence for every
    question, so training runs at 1.7 times the tokens/s of full-depth prompts), 120 notes (a fifth of them dev) for 5
    epochs, chosen on notes that are neither trained on nor held out, and relation questions that decode their own
    tail spans (README, Quickstart)."""

    output_dir: str = "clinical-prompt-output"
    corpus: str = str(BUNDLED_CORPUS)
    schema: str = BUNDLED_SCHEMA
    backbone: str = "minilm"
    strategy: str = "soft-prompt-frozen"
    train_documents: int = 120
    dev_fraction: float = 0.2  # of the training documents, kept to fit the decoding settings
    test_documents: int = 20
    epochs: int = 5
    max_length: int = 128
    negative_ratio: float = 1.0
    prompt_start_layer: int | None = None  # None: half the backbone's layers (3 of MiniLM's 6)
    relation_tails: str = "spans"
    batch_size: int = 16
    head_lr: float = 1e-2
    prompt_lr: float = 3e-2
    seed: int = 42


def run_quickstart(config: QuickstartConfig) -> int:
    """Train, evaluate and extract as :class:`QuickstartConfig` says; print the results and where they are."""
    from clinical_prompt.atomic import write_json
    from clinical_prompt.brat import read_corpus, write_document
    from clinical_prompt.card import training_data_summary, write_card
    from clinical_prompt.console import log_to_stderr
    from clinical_prompt.corpus import train_dev_split
    from clinical_prompt.evaluation import evaluate_documents, format_table
    from clinical_prompt.fit import fit
    from clinical_prompt.schema import load_schema
    from clinical_prompt.training import TrainingConfig

    log_to_stderr()
    output = Path(config.output_dir)
    schema = load_schema(config.schema)
    corpus = read_corpus(config.corpus, collect_problems=True)
    documents = sorted((schema.map_document(d) for d in corpus.documents), key=lambda d: d.doc_id)
    held_out = documents[-config.test_documents:]
    train_docs, dev_docs = train_dev_split(documents[: config.train_documents], dev_fraction=config.dev_fraction,
                                         seed=config.seed)
    print(f"{len(corpus.documents)} notes read ({len(corpus.problems)} problems); "
          f"training on {len(train_docs)}, dev {len(dev_docs)}, held out {len(held_out)}")

    import torch

    torch.manual_seed(config.seed)
    extractor = quickstart_extractor(config, schema)
    training = TrainingConfig(
        output_dir=str(output / "training"),
        num_epochs=config.epochs,
        per_device_batch_size=config.batch_size,
        seed=config.seed,
        load_best_at_end=False,  # a short run: keep the last epoch rather than an early tie at zero
        eval_every_epoch=False,  # so dev is scored (and the thresholds fitted) once, after the last epoch
    )
    result = fit(extractor, train_docs, dev_docs, training,
                 learning_rates={"head": config.head_lr, "prompt": config.prompt_lr})
    extractor.save_pretrained(output / "adapter")

    predictions = extractor.extract(held_out)
    for prediction in predictions:
        write_document(prediction, output / "predictions", write_text=True)
    scores = evaluate_documents({d.doc_id: d for d in held_out}, {d.doc_id: d for d in predictions})
    write_json(output / "metrics.json", scores)
    corpus_name = "MACCROBAT2020" if config.corpus == str(BUNDLED_CORPUS) else Path(config.corpus).name
    write_card(output / "adapter", metrics=scores, training_data=training_data_summary(corpus_name, train_docs))

    print(format_table(scores))
    print(f"\ntrained {config.strategy} on {config.backbone} in {result.train_seconds:.0f} s "
          f"(best epoch {result.best_epoch}); peak memory {result.peak_memory_bytes / 2**20:.0f} MiB")
    print(f"adapter:     {output / 'adapter'} (model card: README.md)")
    print(f"metrics:     {output / 'metrics.json'}")
    print(f"predictions: {output / 'predictions'} ({len(predictions)} notes)")
    print("\nNext: `clinical-prompt quickstart --backbone UFNLP/gatortron-base --corpus YOUR_BRAT_DIR "
          "--schema n2c2-2018` (or a schema YAML) trains the same adapter on your notes with a clinical encoder.")
    return 0


def quickstart_extractor(config: QuickstartConfig, schema: TaskSchema, *, prompt: Mapping[str, Any] | None = None,
                         settings: Mapping[str, Any] | None = None) -> Extractor:
    """The untrained extractor of the main job: ``config``'s strategy, backbone, prompts and MRC settings, with
    ``ClinicalPromptConfig`` fields from ``prompt`` and ``MrcSettings`` fields from ``settings`` replaced."""
    from clinical_prompt.extractors import build_extractor
    from clinical_prompt.extractors.mrc import mrc_prompt_config
    from clinical_prompt.strategies import get_strategy

    spec = get_strategy(config.strategy)
    prompt_config = (
        replace(mrc_prompt_config(schema), prompt_start_layer=_start_layer(config), **(prompt or {}))
        if spec.uses_soft_prompts else None
    )
    mrc_settings = {} if spec.input_format == "bio" else {"relation_tails": config.relation_tails, **(settings or {})}
    return build_extractor(
        config.strategy, schema, config.backbone, max_length=config.max_length, negative_ratio=config.negative_ratio,
        prompt_config=prompt_config, **mrc_settings,
    )


def _start_layer(config: QuickstartConfig) -> int:
    """The configured prompt start layer, or half the backbone's layers."""
    if config.prompt_start_layer is not None:
        return config.prompt_start_layer
    from transformers import AutoConfig

    from clinical_prompt.backbone import resolve_backbone

    return AutoConfig.from_pretrained(resolve_backbone(config.backbone)).num_hidden_layers // 2


def quickstart_config(output_dir: str | os.PathLike, **overrides: object) -> QuickstartConfig:
    """A :class:`QuickstartConfig` with ``output_dir`` and the given fields (``None`` values keep the defaults)."""
    values = {name: value for name, value in overrides.items() if value is not None}
    return QuickstartConfig(output_dir=str(output_dir), **values)
