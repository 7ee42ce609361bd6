"""The fine-tuning baseline extractor: BIO concepts and marked-pair relations on a tiny random BERT."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from clinical_prompt.brat import Document, Entity, Relation, format_ann, read_document
from clinical_prompt.corpus import tokenize_text
from clinical_prompt.evaluation import evaluate_documents
from clinical_prompt.extractors import ExtractorFormatError, load_extractor
from clinical_prompt.extractors.tagging import (
    HEAD_MARKERS,
    TAIL_MARKERS,
    TaggingExtractor,
    build_pair_examples,
    decode_concept_rows,
)
from clinical_prompt.schema import TaskSchema

SCHEMA = TaskSchema.from_dict({
    "name": "toy-medication",
    "concepts": [{"name": "Drug", "query": "Find the drugs."}, {"name": "Dosage", "query": "Find the dosages."}],
    "relations": [{"name": "Dosage-Drug", "head": "Drug", "tails": ["Dosage"], "query": "What is the dosage of {head}?",
                   "head_arg": "Arg2"}],
})
DRUGS = ["aspirin", "ibuprofen", "metformin", "lisinopril", "warfarin", "insulin", "heparin", "digoxin"]
DOSES = ["10 mg", "200 mg", "5 ml", "2 tablets", "1 puff", "40 units"]
TEMPLATES = ["Take {drug} {dose} daily.", "Give {dose} of {drug} at night.", "Started {drug} {dose} twice a day.",
             "Continue {drug} {dose} as needed."]
pytestmark = pytest.mark.usefixtures("one_thread")


def make_document(doc_id: str, rng: random.Random, sentences: int = 3) -> Document:
    """Sentences each holding one drug and its dosage (``Dosage-Drug``: Arg1 = dosage, Arg2 = drug)."""
    text, entities, relations = "", {}, {}
    for _ in range(sentences):
        drug, dose = rng.choice(DRUGS), rng.choice(DOSES)
        sentence = rng.choice(TEMPLATES).format(drug=drug, dose=dose)
        for mention, type_name in ((drug, "Drug"), (dose, "Dosage")):
            start = len(text) + sentence.index(mention)
            key = f"T{len(entities) + 1}"
            entities[key] = Entity(key, type_name, ((start, start + len(mention)),), mention)
        key = f"R{len(relations) + 1}"
        relations[key] = Relation(key, "Dosage-Drug", f"T{len(entities)}", f"T{len(entities) - 1}")
        text += sentence + " "
    return Document(doc_id, text.rstrip(), entities, relations)


def corpus(prefix: str, size: int, seed: int) -> list[Document]:
    rng = random.Random(seed)
    return [make_document(f"{prefix}{i}", rng, rng.randint(2, 3)) for i in range(size)]


def scores(extractor: TaggingExtractor, documents: list[Document]) -> tuple[float, float]:
    """Strict micro-F1 of concepts and relations."""
    predicted = extractor.extract(documents, batch_size=8)
    result = evaluate_documents({d.doc_id: d for d in documents}, {d.doc_id: d for d in predicted})
    return result["concepts"]["strict"]["micro"]["f1"], result["relations"]["strict"]["micro"]["f1"]


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    """A randomly initialized 2-layer BERT with the real MiniLM tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    directory = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(directory)
    return directory


def new_extractor(backbone: Path, **settings) -> TaggingExtractor:
    torch.manual_seed(0)
    return TaggingExtractor(SCHEMA, backbone, **{"max_length": 64, **settings})


@pytest.fixture(scope="module")
def trained(tiny_backbone: Path) -> dict:
    """An extractor trained for 8 epochs on 40 documents, with its per-epoch losses and the untrained scores."""
    extractor = new_extractor(tiny_backbone)
    test = corpus("test", 12, seed=1)
    untrained = scores(extractor, test)
    rows = extractor.training_rows(corpus("train", 40, seed=0))
    optimizer = torch.optim.AdamW(extractor.param_groups(backbone_lr=1e-3, head_lr=3e-3, prompt_lr=0.0,
                                                         weight_decay=0.0))
    generator = torch.Generator().manual_seed(0)
    losses = []
    extractor.train()
    for _ in range(8):
        order = torch.randperm(len(rows), generator=generator).tolist()
        total = 0.0
        for begin in range(0, len(rows), 16):
            loss = extractor(**extractor.collate([rows[i] for i in order[begin : begin + 16]])).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        losses.append(total)
    return {"extractor": extractor, "test": test, "losses": losses, "untrained": untrained}


def test_bio_rows_decode_back_to_the_exact_document_spans(tiny_backbone: Path) -> None:
    extractor = new_extractor(tiny_backbone, max_length=12)
    documents = corpus("doc", 3, seed=5)
    rows = extractor.concept_rows(documents)
    assert len(rows) > 2 * len(documents)  # several windows per document
    decoded = decode_concept_rows(rows, [row["labels"] for row in rows], extractor.bio_labels)
    gold = [(d.doc_id, e.type, e.start, e.end) for d in documents for e in d.entities.values()]
    assert sorted(span[:4] for span in decoded) == sorted(gold)
    assert {span[4] for span in decoded} == {None}


def test_pair_rows_mark_both_mentions_and_carry_the_gold_relation(tiny_backbone: Path) -> None:
    tokenizer = new_extractor(tiny_backbone).tokenizer
    doc = make_document("doc", random.Random(3), sentences=3)
    tokens = tokenize_text(doc.text, tokenizer)
    rows = build_pair_examples([doc], tokenizer, SCHEMA, max_length=64, neighbours=1)
    # each of the 3 drugs pairs with the dosages of its own and neighbouring sentences: 2 + 3 + 2 candidates
    assert len(rows) == 7
    assert len(build_pair_examples([doc], tokenizer, SCHEMA, max_length=64, neighbours=0)) == 3
    gold = {(r.arg2, r.arg1) for r in doc.relations.values()}  # (head = Drug = Arg2, tail = Dosage)
    for row in rows:
        head, tail = doc.entities[row["head_id"]], doc.entities[row["tail_id"]]
        assert (head.type, tail.type) == ("Drug", "Dosage")
        assert row["relation_label"] == int((head.id, tail.id) in gold)
        for entity, marker, (template, _) in ((head, row["head_marker"], HEAD_MARKERS),
                                              (tail, row["tail_marker"], TAIL_MARKERS)):
            opening = tokenizer(template.format(type=entity.type), add_special_tokens=False)["input_ids"]
            first, last = tokens.overlapping(entity.start, entity.end)
            begin = marker + len(opening)
            assert row["input_ids"][marker : begin] == opening
            assert (list(row["offset_mapping"][begin : begin + last - first + 1])
                    == list(tokens.offsets[first : last + 1]))
        context = [tuple(o) for o in row["offset_mapping"] if o[1] > o[0]]
        assert context == [o for o in tokens.offsets if row["window_start"] <= o[0] < row["window_end"]]
    assert sum(row["relation_label"] for row in rows) == 3


def test_training_rows_cap_negatives_with_a_seeded_draw(tiny_backbone: Path) -> None:
    documents = corpus("doc", 10, seed=2)
    uncapped = new_extractor(tiny_backbone, negative_ratio=None).training_rows(documents)
    capped = new_extractor(tiny_backbone, negative_ratio=0.5, seed=1).training_rows(documents)
    again = new_extractor(tiny_backbone, negative_ratio=0.5, seed=1).training_rows(documents)

    def kinds(rows: list[dict]) -> tuple[int, int, int]:
        relation = [r for r in rows if r["task"] == "relation"]
        return len(rows) - len(relation), sum(r["relation_label"] > 0 for r in relation), len(relation)

    concepts, positives, pairs = kinds(uncapped)
    assert pairs - positives > positives // 2  # enough negatives for the cap to bite
    assert kinds(capped) == (concepts, positives, positives + -(-positives // 2))
    assert [r["example_id"] for r in capped] == [r["example_id"] for r in again]
    assert set(uncapped[0]) == set(uncapped[-1])  # one layout for both kinds


def test_a_mixed_batch_sums_the_losses_of_both_kinds(tiny_backbone: Path) -> None:
    extractor = new_extractor(tiny_backbone).eval()
    rows = extractor.training_rows(corpus("doc", 3, seed=4))
    concept = [r for r in rows if r["task"] == "concept"][:2]
    relation = [r for r in rows if r["task"] == "relation"][:3]
    with torch.no_grad():
        mixed = extractor(**extractor.collate([relation[0], *concept, *relation[1:]]))
        alone = [extractor(**extractor.collate(part)) for part in (concept, relation)]
    assert mixed.tag_logits.shape[0] == 2 and mixed.relation_logits.shape == (3, 2)
    assert mixed.loss.item() == pytest.approx(alone[0].loss.item() + alone[1].loss.item(), rel=1e-4)
    assert torch.allclose(mixed.relation_logits, alone[1].relation_logits, atol=1e-5)


def test_param_groups_put_the_backbone_and_the_heads_at_their_rates(tiny_backbone: Path) -> None:
    extractor = new_extractor(tiny_backbone)
    groups = extractor.param_groups(backbone_lr=2e-5, head_lr=1e-3, prompt_lr=0.0, weight_decay=0.01)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert sum(len(g["params"]) for g in groups) == len(rate) == len(list(extractor.parameters()))
    assert {rate[id(p)] for p in extractor.encoder.parameters()} == {2e-5}
    assert {rate[id(p)] for m in (extractor.tagging_head, extractor.pair_head) for p in m.parameters()} == {1e-3}


def test_training_learns_concepts_and_relations(trained: dict) -> None:
    losses = trained["losses"]
    assert losses[-1] < 0.1 * losses[0]
    concept_f1, relation_f1 = scores(trained["extractor"], trained["test"])
    assert trained["untrained"][0] < 0.5 and trained["untrained"][1] < 0.5
    assert concept_f1 >= 0.9 and relation_f1 >= 0.8


def test_extraction_ignores_gold_annotations(trained: dict) -> None:
    extractor, test = trained["extractor"], trained["test"]
    bare = [Document(d.doc_id, d.text) for d in test]
    assert extractor.extract(test) == extractor.extract(bare)
    with pytest.raises(ValueError, match="distinct doc_ids"):
        extractor.extract([bare[0], bare[0]])


def test_predictions_are_valid_brat(trained: dict, tmp_path: Path) -> None:
    predicted = trained["extractor"].extract(trained["test"])
    assert sum(len(d.relations) for d in predicted) > 0
    for doc in predicted:
        (tmp_path / f"{doc.doc_id}.txt").write_text(doc.text, encoding="utf-8")
        (tmp_path / f"{doc.doc_id}.ann").write_text(format_ann(doc), encoding="utf-8")
        read = read_document(tmp_path / f"{doc.doc_id}.txt")
        assert read.entities == doc.entities and read.relations == doc.relations
        assert list(doc.entities) == [f"T{i}" for i in range(1, len(doc.entities) + 1)]
        for relation in doc.relations.values():  # BRAT order of the schema: Arg1 = Dosage, Arg2 = Drug
            assert (doc.entities[relation.arg1].type, doc.entities[relation.arg2].type) == ("Dosage", "Drug")


def test_save_and_load_give_identical_predictions(
    trained: dict, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    extractor = trained["extractor"]
    directory = tmp_path / "saved"
    extractor.save_pretrained(directory, base_model_id="org/tiny-bert")
    names = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
    assert {"extractor.json", "schema.json", "labels.json", "heads.safetensors", "backbone/model.safetensors",
            "backbone/config.json", "backbone/tokenizer.json"} <= names
    assert not any(name.endswith((".tmp", ".bin", ".pt")) for name in names)
    config = json.loads((directory / "extractor.json").read_text())
    assert config["strategy"] == "finetune" and config["backbone"] == "org/tiny-bert"
    for name in names - {"heads.safetensors", "backbone/model.safetensors"}:
        assert str(tmp_path_factory.getbasetemp()) not in (directory / name).read_text()  # no local path
    loaded = load_extractor(directory)
    assert isinstance(loaded, TaggingExtractor)
    assert loaded.extract(trained["test"]) == extractor.extract(trained["test"])
    rows = extractor.training_rows(trained["test"][:2])
    with torch.no_grad():
        before, after = (model.eval()(**model.collate(rows)) for model in (extractor, loaded))
    assert torch.equal(before.tag_logits, after.tag_logits)
    assert torch.equal(before.relation_logits, after.relation_logits)


def test_saving_refuses_a_local_path_and_loading_another_kind(trained: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a hub id"):
        trained["extractor"].save_pretrained(tmp_path, base_model_id=str(tmp_path))
    trained["extractor"].save_pretrained(tmp_path)
    config = json.loads((tmp_path / "extractor.json").read_text())
    (tmp_path / "extractor.json").write_text(json.dumps({**config, "kind": "mrc"}))
    with pytest.raises(ExtractorFormatError, match="kind"):
        TaggingExtractor.from_pretrained(tmp_path)
