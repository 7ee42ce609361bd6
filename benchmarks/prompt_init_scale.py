"""Scale of a new deep prompt's key/value prefixes for each reparameterization, on MiniLM.

    python benchmarks/prompt_init_scale.py [--schema maccrobat-med] [--backbone minilm]

Builds a ``soft-prompt-frozen`` extractor per reparameterization (``none``, ``mlp``, ``lstm``; query
initialization, deep, 16 tokens) and prints the standard deviation of its materialized tables and the spread
between its virtual tokens. With ``none`` the tables are the backbone's own key/value projections of each query;
a reparameterized prompt starts from whatever its encoder makes of them.
"""
from __future__ import annotations

import argparse

import torch

from clinical_prompt.recipes.config import ModelConfig, PromptSection
from clinical_prompt.recipes.runs import build
from clinical_prompt.schema import load_schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schema", default="maccrobat-med")
    parser.add_argument("--backbone", default="minilm")
    args = parser.parse_args()
    schema = load_schema(args.schema)
    print("reparameterization | tables [blocks, tokens, width] | std | mean std across tokens")
    for reparameterization in ("none", "mlp", "lstm"):
        extractor = build(schema, "soft-prompt-frozen", args.backbone, ModelConfig(),
                          PromptSection(reparameterization=reparameterization), seed=42)
        with torch.no_grad():
            tables = extractor.encoder.prompts.materialize()
        print(f"{reparameterization} | {list(tables.shape)} | {tables.std().item():.3f} | "
              f"{tables.std(dim=1).mean().item():.4f}")


if __name__ == "__main__":
    main()
