"""A saved quickstart-variant adapter scored under each pair of concept and relation decoding modes, on the
validation notes (just before the held-out ones) and on the held-out notes of the quickstart's split.

    OMP_NUM_THREADS=1 python benchmarks/decoding_modes.py --adapter benchmark-runs/NAME/adapter --validation 40

Thresholds stay those the adapter was calibrated to; ``flat`` takes each start's nearest end, ``scored`` the
best-scoring spans that do not overlap (README, MRC span head).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools

from quickstart_runs import bundled_notes, end_to_end_scores, validation_notes

from clinical_prompt.extractors import load_extractor
from clinical_prompt.quickstart import BUNDLED_SCHEMA, QuickstartConfig
from clinical_prompt.schema import load_schema

MODES = ("flat", "scored")


def main() -> None:
    defaults = QuickstartConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--validation", type=int, default=40)
    parser.add_argument("--test", type=int, default=defaults.test_documents)
    args = parser.parse_args()

    schema = load_schema(BUNDLED_SCHEMA)
    documents = bundled_notes(defaults, schema)
    parts = {"validation": validation_notes(documents, args.validation, args.test), "held out": documents[-args.test:]}
    extractor = load_extractor(args.adapter)
    calibrated = extractor.settings
    print(f"{'concepts':<9} {'relations':<10}" + "".join(f" {name + ' concepts / relations':>32}" for name in parts))
    for concept_mode, relation_mode in itertools.product(MODES, MODES):
        extractor.settings = dataclasses.replace(calibrated, decoding=concept_mode, relation_decoding=relation_mode)
        cells = []
        for part in parts.values():
            end_to_end = end_to_end_scores(extractor, part)
            cells.append(" / ".join(f"{end_to_end[kind]['strict']['micro']['f1']:.3f}"
                                    for kind in ("concepts", "relations")))
        print(f"{concept_mode:<9} {relation_mode:<10}" + "".join(f" {cell:>32}" for cell in cells), flush=True)
    print(f"strict micro-F1 (official n2c2 counting); calibrated on dev: {calibrated.decoding} at "
          f"{calibrated.threshold}, relations {calibrated.relation_decoding} at {calibrated.relation_threshold}")


if __name__ == "__main__":
    main()
