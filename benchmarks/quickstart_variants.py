"""The quickstart's split under other MRC settings: train, then score the held-out notes end to end and the
relations given the gold entities; one JSON line per run appended to ``--results``, the trained adapter in
``--work-dir/NAME/adapter``.

    OMP_NUM_THREADS=1 python benchmarks/quickstart_variants.py --name pw3 --setting positive_weight=3.0 \
        --results variants.jsonl

Split as in ``clinical-prompt quickstart``: bundled MACCROBAT (``maccrobat-med``) sorted by name, the last
``--test`` notes held out, the first ``--train`` notes trained on with a seeded ``--dev-fraction`` kept for dev
(decoding settings).
The extractor is the quickstart's; ``--setting NAME=VALUE`` replaces one of its ``MrcSettings`` fields and
``--prompt NAME=VALUE`` a ``ClinicalPromptConfig`` field (JSON values; bare words are strings), e.g.
``--prompt prompt_start_layer=0``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from quickstart_runs import bundled_notes, end_to_end_scores, validation_notes

from clinical_prompt.corpus import train_dev_split
from clinical_prompt.evaluation import evaluate_documents
from clinical_prompt.fit import fit
from clinical_prompt.quickstart import BUNDLED_SCHEMA, QuickstartConfig, quickstart_extractor
from clinical_prompt.schema import load_schema
from clinical_prompt.training import TrainingConfig


def setting(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` as ``(name, value)``, the value read as JSON where it is JSON."""
    name, _, value = text.partition("=")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def main() -> None:
    defaults = QuickstartConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--train", type=int, default=defaults.train_documents)
    parser.add_argument("--test", type=int, default=defaults.test_documents)
    parser.add_argument("--validation", type=int, default=0,
                        help="also score this many notes just before the held-out ones (neither trained on nor held "
                             "out: where defaults are chosen)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--dev-fraction", type=float, default=defaults.dev_fraction)
    parser.add_argument("--setting", type=setting, action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--prompt", type=setting, action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--head-lr", type=float, default=defaults.head_lr)
    parser.add_argument("--prompt-lr", type=float, default=defaults.prompt_lr)
    parser.add_argument("--work-dir", default="benchmark-runs")
    parser.add_argument("--results", type=Path, required=True)
    args = parser.parse_args()

    schema = load_schema(BUNDLED_SCHEMA)
    documents = bundled_notes(defaults, schema)
    held_out = documents[-args.test:]
    validation = validation_notes(documents, args.validation, args.test)
    if args.train + args.validation + args.test > len(documents):
        parser.error(f"--train, --validation and --test overlap: {len(documents)} notes")
    train_docs, dev_docs = train_dev_split(documents[: args.train], dev_fraction=args.dev_fraction, seed=defaults.seed)
    torch.manual_seed(defaults.seed)
    extractor = quickstart_extractor(defaults, schema, prompt=dict(args.prompt), settings=dict(args.setting))
    config = TrainingConfig(output_dir=Path(args.work_dir) / args.name, num_epochs=args.epochs,
                            per_device_batch_size=defaults.batch_size, seed=defaults.seed, load_best_at_end=False,
                            eval_every_epoch=False, save_every_epoch=False)
    started = time.perf_counter()
    fit(extractor, train_docs, dev_docs, config,
        learning_rates={"head": args.head_lr, "prompt": args.prompt_lr})
    train_seconds = time.perf_counter() - started
    extractor.save_pretrained(config.output_dir / "adapter")
    end_to_end = end_to_end_scores(extractor, held_out)
    given_gold = evaluate_documents({d.doc_id: d for d in held_out},
                                    {d.doc_id: d for d in extractor.extract_relations(held_out)})

    def f1(result: dict, part: str, mode: str) -> float:
        return round(result[part][mode]["micro"]["f1"], 3)

    row = {
        "name": args.name, "train": len(train_docs), "dev": len(dev_docs), "test": len(held_out),
        "epochs": args.epochs, "settings": dict(args.setting),
        "prompt": dict(args.prompt), "rates": {"head": args.head_lr, "prompt": args.prompt_lr},
        "train_seconds": round(train_seconds),
        **{name: getattr(extractor.settings, name)
           for name in ("decoding", "threshold", "relation_decoding", "relation_threshold")},
        "concept_strict_f1": f1(end_to_end, "concepts", "strict"),
        "concept_lenient_f1": f1(end_to_end, "concepts", "lenient"),
        "relation_strict_f1": f1(end_to_end, "relations", "strict"),
        "relation_given_gold_strict_f1": f1(given_gold, "relations", "strict"),
        "concept_strict_f1_per_type": {
            t: round(c["f1"], 3) for t, c in end_to_end["concepts"]["strict"]["per_type"].items()
        },
    }
    if validation:
        validation_scores = end_to_end_scores(extractor, validation)
        row |= {"validation": len(validation),
                "validation_concept_strict_f1": f1(validation_scores, "concepts", "strict"),
                "validation_relation_strict_f1": f1(validation_scores, "relations", "strict")}
    print(json.dumps(row))
    with args.results.open("a", encoding="utf-8") as stream:
        stream.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
