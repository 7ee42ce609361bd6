"""How much of a training batch is padding: the quality benchmark's MRC training rows (``soft-prompt-frozen``) of each
corpus, batched in the training loop's random order and in its length-grouped order (``group_by_length``).

    python benchmarks/batch_padding.py --config benchmarks/configs/quality.yaml

A batch is padded to its longest row, so the encoder runs ``batch size x longest`` positions; the table gives that
count over one epoch against the rows' real tokens (mean of three epoch orders). Only tokenization runs.
"""
from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

from quality import QualityBenchmark, load_corpus

from clinical_prompt.readers import resolve_corpus_path
from clinical_prompt.recipes import load_config, runs
from clinical_prompt.recipes.config import ModelConfig
from clinical_prompt.recipes.tables import markdown_table
from clinical_prompt.training.loop import _EpochSampler

STRATEGY = "soft-prompt-frozen"


def padded_positions(lengths: Sequence[int], order: Sequence[int], batch_size: int) -> int:
    """Positions the encoder runs when ``order`` is cut into batches of ``batch_size``, each padded to its longest."""
    return sum(max(lengths[i] for i in order[start:start + batch_size]) * len(order[start:start + batch_size])
               for start in range(0, len(order), batch_size))


def corpus_row(name: str, config: QualityBenchmark, epochs: int) -> dict[str, object]:
    corpus, seed, batch_size = config.corpora[name], config.training.seed, config.training.batch_size
    splits = load_corpus(corpus, seed)
    settings = config.methods[STRATEGY]
    model = ModelConfig(strategy=STRATEGY, backbone="minilm", max_length=settings.max_length,
                        negative_ratio=settings.negative_ratio)
    extractor = runs.build(splits.schema, STRATEGY, "minilm", model, config.prompt, seed)
    lengths = [len(row["input_ids"]) for row in extractor.training_rows(splits.training_sample(corpus, seed))]
    real = sum(lengths)
    ratios = {}
    for order, grouped in (("random", None), ("grouped", lengths)):
        sampler = _EpochSampler(len(lengths), seed, batch_size=batch_size, lengths=grouped)
        positions = []
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            positions.append(padded_positions(lengths, list(sampler), batch_size))
        ratios[order] = round(statistics.mean(positions) / real, 2)
    return {"corpus": name, "rows": len(lengths), "mean_tokens": round(real / len(lengths)), "real": real, **ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="benchmarks/configs/quality.yaml")
    parser.add_argument("--epochs", type=int, default=3, help="epoch orders averaged")
    args = parser.parse_args()
    config = load_config(QualityBenchmark, args.config, [])
    present = [name for name, corpus in config.corpora.items()
               if all(resolve_corpus_path(path).exists() for path in corpus.paths().values())]
    rows = [corpus_row(name, config, args.epochs) for name in present]
    print(markdown_table(rows, ["corpus", "rows", "mean_tokens", "real", "random", "grouped"], {
        "rows": "training rows", "mean_tokens": "mean tokens per row", "real": "real tokens per epoch",
        "random": f"positions run / real, random batches of {config.training.batch_size}",
        "grouped": "positions run / real, length-grouped"}), end="")


if __name__ == "__main__":
    main()
