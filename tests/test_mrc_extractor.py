"""MRC extractors (hard prompt, soft prompt, frozen soft prompt) on a synthetic medication corpus with a tiny BERT.

Each strategy trains once (module cache) through ``fit``; the tests then check what it learnt, what it saved and what
it predicts.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from clinical_prompt.brat import Document, Entity, Relation, format_ann, read_document, write_document
from clinical_prompt.card import render_card
from clinical_prompt.evaluation import evaluate_documents
from clinical_prompt.extractors import (
    DocumentPredictions,
    ExtractorFormatError,
    MrcExtractor,
    build_extractor,
    load_extractor,
)
from clinical_prompt.extractors.mrc import THRESHOLD_GRID, mrc_prompt_config, sample_negatives
from clinical_prompt.extractors.mrc.questions import word_masks
from clinical_prompt.fit import dev_scores, fit
from clinical_prompt.schema import TaskSchema
from clinical_prompt.training import TrainingConfig, TrainingResult
from conftest import save_tiny_bert

MRC_STRATEGIES = ("hard-prompt", "soft-prompt", "soft-prompt-frozen")
DRUGS = ("aspirin", "heparin", "insulin", "warfarin", "ibuprofen", "metformin")
DOSES = (5, 10, 20, 25, 50, 100, 250, 500)
FILLERS = ("The patient felt well.", "She was seen in clinic today.", "No fever was noted.", "He walked home.")
QUERIES = {
    "Drug": "Which drugs are given?", "Dosage": "What is the dosage?", "Dosage-Drug": "What is the dosage of {head}?",
}
WORDS = {w.strip(".?").lower() for s in (*FILLERS, *QUERIES.values()) for w in s.split()}
VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[", "]", ".", "?", "{", "}",
    *(str(d) for d in range(10)), *(f"##{d}" for d in range(10)),
    *sorted(WORDS | set(DRUGS) | {"then", "take", "daily", "given", "stopped", "mg"}),
]
SCHEMA = TaskSchema.from_dict({
    "name": "synthetic-medication",
    "concepts": [{"name": "Drug", "query": QUERIES["Drug"]}, {"name": "Dosage", "query": QUERIES["Dosage"]}],
    "relations": [{"name": "Dosage-Drug", "head": "Drug", "tails": ["Dosage"], "query": QUERIES["Dosage-Drug"],
                   "head_arg": "Arg2"}],
})
RATES = {  # a tiny random backbone needs far larger rates than a pretrained one
    "hard-prompt": {"backbone": 3e-3, "head": 1e-2},
    "soft-prompt": {"backbone": 3e-3, "head": 1e-2, "prompt": 1e-2},
    "soft-prompt-frozen": {"head": 1e-2, "prompt": 3e-2},
}
EPOCHS = {"hard-prompt": 12, "soft-prompt": 12, "soft-prompt-frozen": 8}
pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_document(doc_id: str, rng: random.Random) -> Document:
    """Medication sentences ("Take aspirin 10 mg daily.") and stopped drugs, two filler sentences apart.

    Relations ``Dosage-Drug`` have Arg1 = the dosage and Arg2 = the drug, as MACCROBAT's MODIFY.
    """
    units = ["med", "stop"] + ["med"] * rng.randint(0, 1)
    rng.shuffle(units)
    text, entities, links = "", [], []

    def add(type_name: str, piece: str) -> None:
        nonlocal text
        entities.append((type_name, len(text), len(text) + len(piece)))
        text += piece

    for n, unit in enumerate(units):
        text += "".join(rng.choice(FILLERS) + " " for _ in range(2 if n else rng.randint(0, 1)))
        drug = rng.choice(DRUGS)
        if unit == "stop":
            text += "Then "
            add("Drug", drug)
            text += " was stopped. "
            continue
        text += rng.choice(["Take ", "The patient was given "])
        add("Drug", drug)
        text += " "
        add("Dosage", f"{rng.choice(DOSES)} mg")
        text += rng.choice([" daily. ", ". "])
        links.append((len(entities), len(entities) - 1))
    return Document(
        doc_id,
        text.rstrip(),
        entities={f"T{i}": Entity(f"T{i}", t, ((s, e),), text[s:e]) for i, (t, s, e) in enumerate(entities, 1)},
        relations={f"R{i}": Relation(f"R{i}", "Dosage-Drug", f"T{a}", f"T{b}") for i, (a, b) in enumerate(links, 1)},
    )


def synthetic_corpus(size: int, seed: int) -> list[Document]:
    rng = random.Random(seed)
    return [synthetic_document(f"doc-{seed}-{i}", rng) for i in range(size)]


def save_synthetic_site(root: Path, size: int, **bert: int) -> Path:
    """``root`` holding ``corpus/`` (``size`` synthetic notes in BRAT), ``schema.yaml`` (the synthetic schema mapping
    the corpus types onto itself) and ``bert/`` (a tiny BERT of the ``bert`` sizes, no dropout); returns ``root``."""
    for document in synthetic_corpus(size, seed=0):
        write_document(document, root / "corpus", write_text=True)
    data = SCHEMA.to_dict() | {"mapping": {"concepts": {"Drug": "Drug", "Dosage": "Dosage"},
                                           "relations": {"Dosage-Drug": ["Dosage-Drug"]}}}
    TaskSchema.from_dict(data).save(root / "schema.yaml")
    save_tiny_bert(root / "bert", VOCAB, **bert, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return root


def bare(doc: Document) -> Document:
    return Document(doc.doc_id, doc.text)


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory) -> Path:
    """A random 2-layer BERT (hidden 128) with a WordPiece tokenizer over the synthetic vocabulary, as a folder."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), VOCAB, hidden_size=128, num_attention_heads=4,
                          max_position_embeddings=128)


@pytest.fixture(scope="module")
def dev_docs() -> list[Document]:
    return synthetic_corpus(10, seed=1)


@dataclass
class Trained:
    extractor: MrcExtractor
    result: TrainingResult
    initial: dict[str, torch.Tensor]  # state before training
    backbone: Path  # the folder it was built on


@pytest.fixture(scope="module")
def trained(tiny_backbone, dev_docs, tmp_path_factory) -> Callable[[str], Trained]:
    """``trained(strategy)``: an extractor of that strategy fitted on 40 synthetic documents (once per module).

    A frozen backbone must already know its inputs, as a pretrained one does: the frozen strategy is built on the
    backbone that the hard-prompt run trained, the others on the random tiny backbone.
    """
    cache: dict[str, Trained] = {}

    def get(strategy: str) -> Trained:
        if strategy not in cache:
            backbone = tiny_backbone
            if strategy == "soft-prompt-frozen":
                backbone = tmp_path_factory.mktemp("trained-bert")
                hard = get("hard-prompt").extractor
                hard.encoder.backbone.save_pretrained(backbone)
                hard.tokenizer.save_pretrained(backbone)
            torch.manual_seed(0)
            extractor = build_extractor(strategy, SCHEMA, str(backbone), max_length=64)
            initial = {k: v.clone() for k, v in extractor.state_dict().items()}
            config = TrainingConfig(
                output_dir=tmp_path_factory.mktemp(f"run-{strategy}"), num_epochs=EPOCHS[strategy],
                per_device_batch_size=8, mixed_precision="no", seed=0, eval_every_epoch=False,
                save_every_epoch=False, load_best_at_end=False,
            )
            result = fit(extractor, synthetic_corpus(40, seed=0), dev_docs, config, learning_rates=RATES[strategy])
            cache[strategy] = Trained(extractor, result, initial, backbone)
        return cache[strategy]

    return get


# --- training ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", MRC_STRATEGIES)
def test_training_lowers_the_loss_and_extracts_concepts_and_relations(trained, strategy: str) -> None:
    history = trained(strategy).result.history
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    metrics = history[-1]["metrics"]
    assert metrics["strict_f1"] >= 0.9, metrics
    assert metrics["relation_strict_f1"] >= 0.85, metrics


def test_frozen_strategy_changes_only_prompts_and_head(trained) -> None:
    run = trained("soft-prompt-frozen")
    after = run.extractor.state_dict()
    changed = {name for name, value in after.items() if not torch.equal(value, run.initial[name])}
    assert changed and all(name.startswith(("encoder.prompts.", "encoder.heads.")) for name in changed), changed
    assert any(name.startswith("encoder.prompts.") for name in changed)
    backbone = {id(p) for p in run.extractor.encoder.backbone.parameters()}
    groups = run.extractor.param_groups(1e-3, 1e-3, 1e-2, 0.0)
    assert not any(id(p) in backbone for group in groups for p in group["params"])


def test_unfrozen_soft_prompt_trains_the_backbone_too(trained) -> None:
    run = trained("soft-prompt")
    after = run.extractor.state_dict()
    assert any(not torch.equal(after[k], run.initial[k]) for k in after if k.startswith("encoder.backbone."))


def test_fit_refuses_unknown_or_untrained_rates(tiny_backbone, tmp_path) -> None:
    extractor = build_extractor("soft-prompt-frozen", SCHEMA, str(tiny_backbone), max_length=64)
    config = TrainingConfig(output_dir=tmp_path, num_epochs=1, mixed_precision="no")
    with pytest.raises(ValueError, match="unknown learning rate 'heads'"):
        fit(extractor, [], None, config, learning_rates={"heads": 1e-3})
    with pytest.raises(ValueError, match="does not train the backbone"):
        fit(extractor, [], None, config, learning_rates={"backbone": 1e-5})


# --- extraction ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", MRC_STRATEGIES)
def test_extraction_reads_the_text_only(trained, dev_docs, strategy: str) -> None:
    extractor = trained(strategy).extractor
    with_gold = extractor.extract(dev_docs, batch_size=4)
    without = extractor.extract([bare(d) for d in dev_docs], batch_size=16)
    assert [format_ann(d) for d in with_gold] == [format_ann(d) for d in without]
    assert [(d.doc_id, d.text) for d in with_gold] == [(d.doc_id, d.text) for d in dev_docs]


def test_predictions_are_valid_brat_in_schema_argument_order(trained, dev_docs, tmp_path) -> None:
    predictions = trained("hard-prompt").extractor.extract(dev_docs)
    relations = [r for doc in predictions for r in doc.relations.values()]
    assert relations
    for doc in predictions:
        for relation in doc.relations.values():
            assert (doc.entities[relation.arg1].type, doc.entities[relation.arg2].type) == ("Dosage", "Drug")
        txt, ann = tmp_path / f"{doc.doc_id}.txt", tmp_path / f"{doc.doc_id}.ann"
        txt.write_text(doc.text, encoding="utf-8")
        ann.write_text(format_ann(doc), encoding="utf-8")
        reread = read_document(txt, ann)
        assert reread.entities == doc.entities and reread.relations == doc.relations


def test_relation_tails_missing_from_the_entities_become_entities(trained, dev_docs) -> None:
    """With ``relation_tails="spans"``, given only the drugs, relation questions still find the dosages and add them
    as Dosage entities."""
    drugs_only = [
        Document(d.doc_id, d.text, entities={k: e for k, e in d.entities.items() if e.type == "Drug"})
        for d in dev_docs
    ]
    extractor = trained("hard-prompt").extractor
    saved = extractor.settings
    extractor.settings = dataclasses.replace(saved, relation_tails="spans")
    try:
        predictions = extractor.extract_relations(drugs_only)
    finally:
        extractor.settings = saved
    gold = {(d.doc_id, e.start, e.end) for d in dev_docs for e in d.entities.values() if e.type == "Dosage"}
    found = {(d.doc_id, e.start, e.end) for d in predictions for e in d.entities.values() if e.type == "Dosage"}
    assert len(gold & found) >= 0.85 * len(gold)
    assert sum(len(d.relations) for d in predictions) == len(found)


def test_relation_questions_answered_by_entities_link_only_entities_already_found(trained, dev_docs) -> None:
    """By default (``relation_tails="entities"``) a relation question scores the entities of its tail types: given
    the gold entities it links them as gold does, given only the drugs it adds nothing."""
    extractor = trained("hard-prompt").extractor
    assert extractor.settings.relation_tails == "entities"
    gold = {d.doc_id: d for d in dev_docs}
    linked = {d.doc_id: d for d in extractor.extract_relations(dev_docs)}
    drugs_only = [
        Document(d.doc_id, d.text, entities={k: e for k, e in d.entities.items() if e.type == "Drug"})
        for d in dev_docs
    ]
    unlinked = extractor.extract_relations(drugs_only)
    assert evaluate_documents(gold, linked)["relations"]["strict"]["micro"]["f1"] >= 0.85
    assert all(len(d.entities) == len(gold[d.doc_id].entities) for d in linked.values())
    assert not any(d.relations for d in unlinked)
    assert all(e.type == "Drug" for d in unlinked for e in d.entities.values())


# --- saving and loading -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", MRC_STRATEGIES)
def test_save_and_load_give_identical_predictions(trained, dev_docs, tmp_path, strategy) -> None:
    run = trained(strategy)
    extractor = run.extractor
    extractor.save_pretrained(tmp_path)
    files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert {"extractor.json", "schema.json", "labels.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".tmp"))]
    weights = {"hard-prompt": "heads.safetensors"}.get(strategy, "adapter_model.safetensors")
    assert weights in files
    assert ("backbone/model.safetensors" in files) == (strategy != "soft-prompt-frozen")
    for name in files:
        if name.endswith(".json"):
            assert str(run.backbone) not in (tmp_path / name).read_text(), name
    meta = json.loads((tmp_path / "extractor.json").read_text())
    assert (meta["kind"], meta["strategy"], meta["backbone"]) == ("mrc", strategy, None)

    backbone = str(run.backbone) if strategy == "soft-prompt-frozen" else None
    loaded = load_extractor(tmp_path, backbone=backbone)
    assert isinstance(loaded, MrcExtractor) and loaded.strategy == strategy
    assert loaded.schema == SCHEMA and loaded.settings == extractor.settings
    assert [format_ann(d) for d in loaded.extract(dev_docs)] == [format_ann(d) for d in extractor.extract(dev_docs)]


def test_frozen_extractor_from_a_local_backbone_asks_for_it(trained, tmp_path) -> None:
    trained("soft-prompt-frozen").extractor.save_pretrained(tmp_path)
    with pytest.raises(ExtractorFormatError, match="pass backbone="):
        load_extractor(tmp_path)


def test_load_refuses_a_foreign_directory(tmp_path) -> None:
    with pytest.raises(ExtractorFormatError, match="extractor.json: missing"):
        load_extractor(tmp_path)
    (tmp_path / "extractor.json").write_text(json.dumps({"kind": "mrc", "strategy": "prompt-tuning"}))
    with pytest.raises(ExtractorFormatError, match="unknown strategy"):
        load_extractor(tmp_path)


# --- rows ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("marking", ["markers", "segment"])
def test_soft_rows_have_one_prompt_block_per_type_and_a_marked_head(tiny_backbone, marking: str) -> None:
    extractor = build_extractor("soft-prompt", SCHEMA, str(tiny_backbone), max_length=64, head_marking=marking)
    assert extractor.encoder.config.prompt_blocks == ["Drug", "Dosage", "Dosage-Drug"]
    assert extractor.encoder.config.depth == "deep" and extractor.encoder.config.num_virtual_tokens == 16
    doc = synthetic_corpus(1, seed=3)[0]
    rows = extractor.training_rows([doc])
    relation_rows = [r for r in rows if "head_id" in r]
    assert {r["prompt_id"] for r in rows if "head_id" not in r} == {0, 1}
    assert {r["prompt_id"] for r in relation_rows} == {2}
    tokenizer = extractor.tokenizer
    for row in relation_rows:
        tokens = tokenizer.convert_ids_to_tokens(row["input_ids"])
        head = doc.entities[row["head_id"]]
        marked = [t for t, (s, e) in zip(tokens, row["offset_mapping"]) if head.start <= s and e <= head.end and e > s]
        if marking == "markers":
            assert tokens.count("[") == tokens.count("]") == 1 and tokens[tokens.index("[") + 1] == marked[0]
            assert set(row["token_type_ids"]) == {0}
        else:
            assert "[" not in tokens
            flagged = [t for t, flag in zip(tokens, row["token_type_ids"]) if flag == 1]
            assert flagged == marked
    batch = extractor.collate(rows)
    assert batch["block_ids"].tolist() == [r["prompt_id"] for r in rows]
    output = extractor(**batch)
    assert output.loss.ndim == 0 and output.start_logits.shape == batch["input_ids"].shape


def test_hard_prompt_rows_ask_the_query_and_refuse_a_prompt_config(tiny_backbone) -> None:
    extractor = build_extractor("hard-prompt", SCHEMA, str(tiny_backbone), max_length=64)
    doc = synthetic_corpus(1, seed=3)[0]
    rows = extractor.training_rows([doc])
    drug = next(e for e in doc.entities.values() if e.type == "Drug")
    row = next(r for r in rows if r.get("head_id") == drug.id)
    query = extractor.tokenizer.convert_ids_to_tokens(row["input_ids"])[: row["token_type_ids"].index(1)]
    assert " ".join(query) == f"[CLS] what is the dosage of {drug.text} ? [SEP]"
    assert "block_ids" not in extractor.collate(rows)
    with pytest.raises(ValueError, match="uses no soft prompt"):
        build_extractor("hard-prompt", SCHEMA, str(tiny_backbone), prompt_config=object())
    with pytest.raises(ValueError, match="unknown strategy 'soft'"):
        build_extractor("soft", SCHEMA, str(tiny_backbone))


def test_spans_start_and_end_only_on_word_boundaries() -> None:
    text = "take 10mg q.d. (aspirin)"
    offsets = [(0, 0), (0, 4), (5, 7), (7, 9), (10, 11), (11, 12), (12, 13), (13, 14), (15, 16), (16, 23), (23, 24)]
    starts, ends = word_masks(text, offsets)
    assert starts == [0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]  # "10" starts a word, "mg" does not
    assert ends == [0, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1]  # "10" does not end one


# --- predicted documents ------------------------------------------------------------------------------------------


def test_document_predictions_number_deduplicate_and_split_line_breaks(tmp_path) -> None:
    text = "Take aspirin\n10 mg. Stop heparin."
    predictions = DocumentPredictions(Document("note", text))
    heparin = predictions.add_entity("Drug", 25, 32)
    aspirin = predictions.add_entity("Drug", 5, 12)
    dose = predictions.add_entity("Dosage", 5, 18)  # crosses the line break
    assert predictions.add_entity("Drug", 5, 12) == aspirin
    assert predictions.add_entity("Drug", 12, 13) is None  # only a line break
    relation = SCHEMA.relation("Dosage-Drug")
    predictions.add_relation(relation, aspirin, dose)
    predictions.add_relation(relation, aspirin, dose)
    with pytest.raises(KeyError):
        predictions.add_relation(relation, heparin, ("Dosage", 0, 4))
    doc = predictions.document()
    assert [(e.id, e.type, e.spans) for e in doc.entities.values()] == [
        ("T1", "Drug", ((5, 12),)), ("T2", "Dosage", ((5, 12), (13, 18))), ("T3", "Drug", ((25, 32),)),
    ]
    assert list(doc.relations.values()) == [Relation("R1", "Dosage-Drug", "T2", "T1")]
    (tmp_path / "note.txt").write_text(text, encoding="utf-8")
    (tmp_path / "note.ann").write_text(format_ann(doc), encoding="utf-8")
    reread = read_document(tmp_path / "note.txt", tmp_path / "note.ann")
    assert reread.entities == doc.entities and reread.relations == doc.relations


def test_sample_negatives_keeps_every_positive_and_caps_the_rest() -> None:
    rows = [{"id": i, "span_labels": [[1, 2]] if i % 5 == 0 else []} for i in range(50)]
    kept = sample_negatives(rows, 1.5)
    positives = [row for row in kept if row["span_labels"]]
    assert [row["id"] for row in positives] == list(range(0, 50, 5))
    assert len(kept) - len(positives) == 15
    assert [row["id"] for row in kept] == sorted(row["id"] for row in kept)
    assert sample_negatives(rows, 1.5) == kept
    assert sample_negatives(rows, 100) == rows
    assert [row["id"] for row in sample_negatives(rows, 0)] == list(range(0, 50, 5))


def test_negative_ratio_thins_the_concept_rows(tiny_backbone) -> None:
    docs = [*synthetic_corpus(6, seed=3), Document("quiet", "The patient slept well overnight.")]
    full = build_extractor("hard-prompt", SCHEMA, str(tiny_backbone), max_length=64)
    thin = build_extractor("hard-prompt", SCHEMA, str(tiny_backbone), max_length=64, negative_ratio=0.0)
    full_rows, thin_rows = full.training_rows(docs), thin.training_rows(docs)
    assert [row for row in thin_rows if row["span_labels"]] == [row for row in full_rows if row["span_labels"]]
    empty = [row for row in full_rows if not row["span_labels"]]
    assert {"head_id" in row for row in empty} == {True, False}  # concept and relation rows without an answer
    assert len(thin_rows) == len(full_rows) - len(empty)


@pytest.fixture
def half_trained(tiny_backbone, tmp_path) -> MrcExtractor:
    """A hard-prompt extractor after one epoch on 16 synthetic notes: its best thresholds are not 0.5."""
    torch.manual_seed(0)
    extractor = build_extractor("hard-prompt", SCHEMA, str(tiny_backbone), max_length=64)
    config = TrainingConfig(output_dir=tmp_path, num_epochs=1, per_device_batch_size=8, mixed_precision="no",
                            eval_every_epoch=False, save_every_epoch=False)
    fit(extractor, synthetic_corpus(16, seed=0), None, config, learning_rates=RATES["hard-prompt"])
    return extractor


def test_calibration_keeps_the_dev_decoding_and_threshold_with_the_best_concept_f1(half_trained, dev_docs) -> None:
    extractor = half_trained
    extractor.relation_questions = lambda predictions: []  # concepts only
    chosen = extractor.calibrate(dev_docs)
    assert (extractor.settings.decoding, extractor.settings.threshold) == (chosen["decoding"], chosen["threshold"])
    scores = {}
    for mode, threshold in itertools.product(("flat", "scored"), THRESHOLD_GRID):
        extractor.settings = dataclasses.replace(extractor.settings, decoding=mode, threshold=threshold)
        scores[mode, threshold] = dev_scores(extractor, dev_docs)["strict_f1"]
    assert len(set(scores.values())) > 1, scores  # the choice matters on this dev set
    assert scores[chosen["decoding"], chosen["threshold"]] == max(scores.values()), scores
    assert chosen["threshold"] == max(t for (mode, t), f1 in scores.items()
                                      if mode == chosen["decoding"] and f1 == max(scores.values()))


def test_calibration_keeps_the_relation_decoding_with_the_best_end_to_end_f1(half_trained, dev_docs) -> None:
    extractor = half_trained
    extractor.settings = dataclasses.replace(extractor.settings, relation_tails="spans")  # spans vary with threshold
    chosen = extractor.calibrate(dev_docs)
    settings = extractor.settings
    assert (settings.relation_decoding, settings.relation_threshold) == (
        chosen["relation_decoding"], chosen["relation_threshold"])
    gold = {doc.doc_id: doc for doc in dev_docs}
    scores = {}
    for mode, threshold in itertools.product(("flat", "scored"), THRESHOLD_GRID):
        extractor.settings = dataclasses.replace(settings, relation_decoding=mode, relation_threshold=threshold)
        predicted = {doc.doc_id: doc for doc in extractor.extract(dev_docs)}
        scores[mode, threshold] = evaluate_documents(gold, predicted)["relations"]["strict"]["micro"]["f1"]
    assert len(set(scores.values())) > 1, scores  # relation rows are decoded as relation_decoding/threshold say
    assert scores[chosen["relation_decoding"], chosen["relation_threshold"]] == max(scores.values()), scores


def test_calibration_keeps_nested_decoding_where_it_is_set(half_trained, dev_docs) -> None:
    extractor = half_trained
    extractor.settings = dataclasses.replace(extractor.settings, decoding="nested", relation_tails="spans")
    chosen = extractor.calibrate(dev_docs)
    assert chosen["decoding"] == "nested" and chosen["relation_decoding"] == "nested"


def test_relation_rows_decode_in_their_own_mode(half_trained, dev_docs) -> None:
    """Nested concept decoding with flat relation decoding: the tails of one head never overlap."""
    extractor = half_trained
    base = dataclasses.replace(extractor.settings, relation_tails="spans", decoding="nested", relation_threshold=0.05)

    def overlapping_tails(relation_decoding: str) -> int:
        extractor.settings = dataclasses.replace(base, relation_decoding=relation_decoding)
        count = 0
        for doc in extractor.extract_relations(dev_docs):
            tails: dict[str, list[tuple[int, int]]] = {}
            for relation in doc.relations.values():
                tails.setdefault(relation.arg2, []).append(doc.entities[relation.arg1].spans[0])
            count += sum(a[0] < b[1] and b[0] < a[1] for spans in tails.values()
                         for a, b in itertools.combinations(spans, 2))
        return count

    assert overlapping_tails("nested") > 0
    assert overlapping_tails("flat") == 0


@pytest.mark.parametrize("dev_f1s, calibrations", [
    ((0.2, 0.4), 2),  # the last epoch is the best: its evaluation's fit stands
    ((0.4, 0.2), 3),  # epoch 1 is restored: decoding is fitted again to its weights
])
def test_fit_refits_decoding_only_when_it_restores_earlier_weights(
        tiny_backbone, dev_docs, tmp_path, monkeypatch, dev_f1s, calibrations) -> None:
    import clinical_prompt.fit as fit_module

    extractor = build_extractor("hard-prompt", SCHEMA, str(tiny_backbone), max_length=64)
    calls = []
    monkeypatch.setattr(extractor, "calibrate", lambda docs, batch_size: calls.append(len(docs)) or {})
    scores = iter(dev_f1s)
    monkeypatch.setattr(fit_module, "dev_scores", lambda model, docs, batch_size: {"strict_f1": next(scores)})
    config = TrainingConfig(output_dir=tmp_path, num_epochs=2, per_device_batch_size=8, mixed_precision="no")
    result = fit(extractor, synthetic_corpus(4, seed=0), dev_docs, config, learning_rates=RATES["hard-prompt"])
    assert result.best_epoch == 1 + dev_f1s.index(max(dev_f1s))
    assert calls == [len(dev_docs)] * calibrations


def test_fit_refuses_documents_that_hold_no_concept_of_the_schema(tiny_backbone, tmp_path) -> None:
    extractor = build_extractor("hard-prompt", SCHEMA, str(tiny_backbone), max_length=64)
    unmapped = [Document(d.doc_id, d.text, entities={k: dataclasses.replace(e, type="Medication")
                                                     for k, e in d.entities.items()})
                for d in synthetic_corpus(4, seed=0)]
    config = TrainingConfig(output_dir=tmp_path, num_epochs=1, per_device_batch_size=8, mixed_precision="no")
    with pytest.raises(ValueError, match="none of the 4 training documents holds a concept of schema"):
        fit(extractor, unmapped, None, config)
    assert not any(tmp_path.iterdir())


def test_a_frozen_adapter_holds_no_note_text(trained, tmp_path) -> None:
    """The per-institution artifact carries prompts, head weights, the schema and settings: no words of the notes."""
    trained("soft-prompt-frozen").extractor.save_pretrained(tmp_path)
    content = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()).lower()
    note_words = {*DRUGS, "patient", "clinic", "stopped", "fever"}
    assert not [word for word in note_words if word.encode() in content]


# --- late prompts -------------------------------------------------------------------------------------------------


def test_late_frozen_prompts_learn_in_batches_of_whole_windows(trained, dev_docs, tmp_path) -> None:
    backbone = trained("soft-prompt-frozen").backbone  # the hard-prompt run's trained backbone, 2 layers
    torch.manual_seed(0)
    late = dataclasses.replace(mrc_prompt_config(SCHEMA), prompt_start_layer=1)
    extractor = build_extractor("soft-prompt-frozen", SCHEMA, str(backbone), max_length=64, prompt_config=late)
    assert extractor.shares_trunk
    batches: list[list[tuple[int, ...]]] = []
    collate = extractor.collate
    extractor.collate = lambda rows: batches.append([tuple(row["input_ids"]) for row in rows]) or collate(rows)
    config = TrainingConfig(output_dir=tmp_path / "run", num_epochs=EPOCHS["soft-prompt-frozen"],
                            per_device_batch_size=8, mixed_precision="no", seed=0, eval_every_epoch=False,
                            save_every_epoch=False, load_best_at_end=False)
    result = fit(extractor, synthetic_corpus(40, seed=0), dev_docs, config, learning_rates=RATES["soft-prompt-frozen"])
    assert result.history[-1]["metrics"]["strict_f1"] >= 0.9, result.history[-1]["metrics"]
    first_epoch = batches[: len(batches) // config.num_epochs]
    texts = {text for batch in first_epoch for text in batch}
    homes = [{i for i, batch in enumerate(first_epoch) if text in batch} for text in texts]
    assert all(len(home) == 1 for home in homes)  # every text's questions in one batch
    assert any(len(batch) > len(set(batch)) for batch in first_epoch)  # and texts asked several questions
    extractor.save_pretrained(tmp_path / "adapter")
    loaded = load_extractor(tmp_path / "adapter", backbone=str(backbone))
    assert loaded.encoder.config.prompt_start_layer == 1
    assert [format_ann(d) for d in loaded.extract(dev_docs)] == [format_ann(d) for d in extractor.extract(dev_docs)]
    assert "late prompts: key/value prefixes in layers 1 to 1 of 2" in str(render_card(tmp_path / "adapter"))
