"""Whether training repeats itself on this machine: the quickstart's extractor fitted twice in one process, same seed,
one epoch on the first few bundled notes; prints the largest difference between the two runs' trained parameters.

    python benchmarks/reproducibility.py --threads 2 --start-layer 3 [--documents 4]

CPU kernels that split a reduction over threads may add in a different order from run to run; with one thread the
two runs should agree exactly.
"""
from __future__ import annotations

import argparse

import torch
from quickstart_runs import bundled_notes, fit_one_epoch

from clinical_prompt.brat import Document
from clinical_prompt.quickstart import QuickstartConfig, quickstart_extractor
from clinical_prompt.schema import TaskSchema, load_schema


def trained_parameters(config: QuickstartConfig, schema: TaskSchema, documents: list[Document]
                       ) -> dict[str, torch.Tensor]:
    """The trainable parameters after one epoch of ``fit`` from ``config.seed``."""
    torch.manual_seed(config.seed)
    extractor = quickstart_extractor(config, schema)
    fit_one_epoch(extractor, documents, config)
    return {name: p.detach().clone() for name, p in extractor.named_parameters() if p.requires_grad}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--start-layer", type=int, default=None, help="prompt start layer (default: the quickstart's)")
    parser.add_argument("--documents", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = QuickstartConfig(prompt_start_layer=args.start_layer)
    schema = load_schema(config.schema)
    documents = bundled_notes(config, schema)[: args.documents]
    first, second = (trained_parameters(config, schema, documents) for _ in range(2))
    difference = max((first[name] - second[name]).abs().max().item() for name in first)
    print(f"{args.threads} thread(s), prompts from layer {args.start_layer}: largest parameter difference between two "
          f"runs {difference:.3g}")


if __name__ == "__main__":
    main()
