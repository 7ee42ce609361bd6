"""Extraction throughput on CPU: the quickstart pipeline against a stock transformers token-classification pipeline.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/extraction_speed.py [--documents 10] [--adapter DIR] \
        [--start-layers 0 2 3 4]

On the first ``--documents`` notes of the bundled MACCROBAT corpus (``maccrobat-med`` schema, sorted by id), MiniLM,
128 tokens per row, batches of 32, after one warm-up document. Concept extraction, whose cost does not depend on
what a model has learnt (the relation stage asks about each predicted concept, so an untrained model's chance
concepts would make it meaningless):

- ``soft-prompt-frozen k=K``: the quickstart pipeline (a deep-prompt MRC question per concept type and sentence) with
  prompts from layer K (``--start-layers``; 0 = full depth; K > 0: late prompts, the layers below K run once per
  sentence for all questions);
- ``hard-prompt``: the same questions as text queries; ``finetune``: BIO tagging of each sentence;
- ``stock-token-classification``: ``transformers.pipeline("token-classification", aggregation_strategy="simple")``
  over the same sentences (one forward per sentence), the stock peer.

``--adapter DIR`` (a trained extractor, e.g. the quickstart's ``clinical-prompt-output/adapter``) adds its end-to-end
row: concepts, then the relation question of each predicted head.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from dataclasses import replace
from functools import partial

import torch
import transformers
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

from clinical_prompt.backbone import resolve_backbone
from clinical_prompt.brat import Document
from clinical_prompt.corpus.sentences import split_sentences
from clinical_prompt.corpus.splits import read_mapped
from clinical_prompt.extractors import build_extractor, load_extractor
from clinical_prompt.extractors.mrc import mrc_prompt_config
from clinical_prompt.quickstart import BUNDLED_CORPUS, BUNDLED_SCHEMA
from clinical_prompt.schema import CorpusMapping, TaskSchema, load_schema
from clinical_prompt.strategies import get_strategy

MAX_LENGTH, BATCH = 128, 32
STRATEGIES = ("soft-prompt-frozen", "hard-prompt", "finetune")


def ours(strategy: str, schema: TaskSchema, start_layer: int = 0):
    """A function extracting the concepts of ``schema`` from documents with our ``strategy`` (untrained), soft
    prompts from ``start_layer``."""
    schema = replace(schema, relations=(), mapping=CorpusMapping())
    soft = get_strategy(strategy).uses_soft_prompts
    prompt_config = replace(mrc_prompt_config(schema), prompt_start_layer=start_layer) if soft else None
    extractor = build_extractor(strategy, schema, "minilm", max_length=MAX_LENGTH, prompt_config=prompt_config)
    return lambda documents: extractor.extract(documents, batch_size=BATCH)


def trained(adapter: str):
    """A function extracting concepts and relations with the trained extractor in ``adapter``."""
    extractor = load_extractor(adapter)
    return lambda documents: extractor.extract(documents, batch_size=BATCH)


def stock(num_concepts: int):
    """A function running a stock token-classification pipeline over the sentences of documents (BIO labels)."""
    path = resolve_backbone("minilm")
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=2 * num_concepts + 1)
    tagger = pipeline("token-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(path),
                      aggregation_strategy="simple", device="cpu")
    tagger.tokenizer.model_max_length = MAX_LENGTH

    def extract(documents: list[Document]) -> list:
        sentences = [doc.text[start:end] for doc in documents for start, end in split_sentences(doc.text)]
        return tagger(sentences, batch_size=BATCH)

    return extract


def measure(extract, documents: list[Document]) -> tuple[float, list]:
    extract(documents[:1])  # warm-up
    started = time.perf_counter()
    output = extract(documents)
    return time.perf_counter() - started, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=10)
    parser.add_argument("--adapter", help="a trained soft-prompt-frozen extractor folder (save_pretrained)")
    parser.add_argument("--methods", nargs="+", choices=(*STRATEGIES, "stock-token-classification"),
                        default=[*STRATEGIES, "stock-token-classification"])
    parser.add_argument("--start-layers", nargs="+", type=int, default=[0, 2, 3, 4],
                        help="soft-prompt-frozen: the layers prompts start in (MiniLM has 6: 0, L/3, L/2, 2L/3)")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    schema = load_schema(BUNDLED_SCHEMA)
    documents = [Document(doc.doc_id, doc.text) for doc in read_mapped(BUNDLED_CORPUS, schema)[: args.documents]]
    sentences = sum(len(split_sentences(doc.text)) for doc in documents)
    factories = []
    for method in args.methods:
        if method.startswith("stock"):
            factories.append((method, partial(stock, len(schema.concepts))))
        elif get_strategy(method).uses_soft_prompts:
            factories += [(f"{method} k={k}", partial(ours, method, schema, k)) for k in args.start_layers]
        else:
            factories.append((method, partial(ours, method, schema)))
    if args.adapter:
        factories.append(("trained adapter, end to end", partial(trained, args.adapter)))
    rows = []
    for method, factory in factories:
        torch.manual_seed(0)
        seconds, output = measure(factory(), documents)
        found = (f"{sum(map(len, output))} concepts" if method.startswith("stock") else
                 f"{sum(len(d.entities) for d in output)} concepts, {sum(len(d.relations) for d in output)} relations")
        rows.append((method, seconds, found))
        print(f"  {method}: {seconds:.1f} s", flush=True)
    stock_seconds = next((s for m, s, _ in rows if m == "stock-token-classification"), None)
    full_depth = next((s for m, s, _ in rows if m.endswith(" k=0")), None)
    header = f"{'method':<28} {'docs/s':>8} {'sentences/s':>12} {'x stock':>8} {'x k=0':>6}  predicted"
    print(header + "\n" + "-" * len(header))
    for method, seconds, found in rows:
        ratios = [f"{base / seconds:.2f}" if base else "-" for base in (stock_seconds, full_depth)]
        print(f"{method:<28} {len(documents) / seconds:>8.2f} {sentences / seconds:>12.1f} {ratios[0]:>8} "
              f"{ratios[1]:>6}  {found}")
    print(f"CPU, {torch.get_num_threads()} threads (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); "
          f"{len(documents)} MACCROBAT notes, {sentences} sentences, {len(schema.concepts)} concept types; "
          "concepts only, untrained models, except the trained adapter's row.")


if __name__ == "__main__":
    main()
