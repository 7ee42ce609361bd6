"""Every recipe end to end from its shipped tiny config, on a tiny random backbone with MiniLM's tokenizer:
the files each writes and the rows they hold."""
from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from clinical_prompt.brat import read_corpus
from clinical_prompt.cli import main
from clinical_prompt.readers import resolve_corpus_path
from clinical_prompt.recipes import load_config
from clinical_prompt.recipes.cli import main as recipe_main
from clinical_prompt.recipes.metadata import path_checksums
from clinical_prompt.recipes.runs import load_splits
from clinical_prompt.schema import load_schema

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"
PNG = b"\x89PNG\r\n\x1a\n"
BUNDLED = resolve_corpus_path("bundled:maccrobat2020")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def in_repository(monkeypatch):
    monkeypatch.chdir(REPO)


def save_tiny_minilm(directory: Path, minilm_path: Path) -> Path:
    """A random 2-layer BERT of hidden size 32 with MiniLM's tokenizer, saved in ``directory``: MACCROBAT text
    tokenizes as for MiniLM, and a recipe trains in seconds."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory, minilm_path) -> Path:
    return save_tiny_minilm(tmp_path_factory.mktemp("tiny-minilm"), minilm_path)


def config_blocks(config) -> list[str]:
    schema = load_schema(config.data.schema)
    return [*schema.concept_names, *schema.relation_names]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def run(recipe: str, config: str, output: Path, *overrides: str) -> dict:
    assert main([recipe, "--config", str(CONFIGS / config), f"output_dir={output}", *overrides]) == 0
    return json.loads((output / "run.json").read_text())


@pytest.mark.parametrize(("sharing", "start_layer"), [("per-type", 0), ("shared", 0), ("per-type", 1)])
def test_train_then_evaluate_and_extract_the_saved_model(tmp_path, tiny_backbone, sharing, start_layer):
    trained = run("train", "tiny-train.yaml", tmp_path / "train", f"model.backbone={tiny_backbone}",
                  f"prompt.sharing={sharing}", f"prompt.start_layer={start_layer}")
    config = load_config("train", CONFIGS / "tiny-train.yaml", [f"model.backbone={tiny_backbone}"])
    saved = json.loads((tmp_path / "train" / "model" / "adapter_config.json").read_text())
    assert saved["prompt_blocks"] == (["shared"] if sharing == "shared" else config_blocks(config))
    assert saved["prompt_start_layer"] == start_layer
    assert trained["config"]["model"]["backbone"] == str(tiny_backbone)
    assert trained["data"]["data.train"]["sha256"] == path_checksums("bundled:maccrobat2020")["sha256"]
    assert trained["outputs"]["documents_per_process"] == [2]
    assert (tmp_path / "train" / "model" / "README.md").is_file()
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    test_docs = load_splits(config.data, config.training.seed).test
    assert sorted(p.stem for p in (tmp_path / "train" / "predictions").glob("*.ann")) == [d.doc_id for d in test_docs]
    assert metrics["documents"]["gold"] == 2

    gold = tmp_path / "gold"  # the test notes as the corpus holds them (the recipes map them onto the schema)
    gold.mkdir()
    for document in test_docs:
        for suffix in (".txt", ".ann"):
            shutil.copy(BUNDLED / f"{document.doc_id}{suffix}", gold)
    model = tmp_path / "train" / "model"
    assert main(["evaluate", "--config", str(CONFIGS / "evaluate-maccrobat.yaml"), f"model_dir={model}",
                 f"test={gold}", f"output_dir={tmp_path / 'evaluate'}", f"backbone={tiny_backbone}"]) == 0
    assert json.loads((tmp_path / "evaluate" / "metrics.json").read_text()) == metrics  # the saved model reloads

    assert recipe_main("extract", ["--config", str(CONFIGS / "extract-maccrobat.yaml"), f"model_dir={model}",
                                   f"input={gold}", f"output_dir={tmp_path / 'extract'}",
                                   f"backbone={tiny_backbone}"]) == 0
    for ann in (tmp_path / "train" / "predictions").glob("*.ann"):
        assert (tmp_path / "extract" / ann.name).read_text() == ann.read_text()
    assert json.loads((tmp_path / "extract" / "run.json").read_text())["outputs"]["documents"] == 2


def test_fewshot_writes_runs_summary_table_and_learning_curve(tmp_path, tiny_backbone):
    output = tmp_path / "fewshot"
    run("fewshot", "tiny-fewshot.yaml", output, f"model.backbone={tiny_backbone}")
    every = rows(output / "runs.csv")
    assert [(r["strategy"], r["size"], r["seed"]) for r in every] == [
        (s, size, seed) for seed in ("1", "2") for size in ("4", "8") for s in ("soft-prompt-frozen", "finetune")]
    assert all(r["unit"] == "sentences" and 0 <= float(r["concept_strict_f1"]) <= 1 for r in every)
    summary = rows(output / "results.csv")
    assert [(r["strategy"], r["size"], r["runs"]) for r in summary] == [
        ("soft-prompt-frozen", "4", "2"), ("finetune", "4", "2"),
        ("soft-prompt-frozen", "8", "2"), ("finetune", "8", "2")]
    for r in summary:
        runs = [float(x["concept_strict_f1"]) for x in every
                if (x["strategy"], x["size"]) == (r["strategy"], r["size"])]
        assert float(r["concept_strict_f1"]) == pytest.approx(sum(runs) / 2)
    table = (output / "results.md").read_text().splitlines()
    assert table[0].startswith("| strategy | training sentences | runs | concept strict F1") and len(table) == 6
    assert " ± " in table[2]
    assert (output / "learning_curve.png").read_bytes().startswith(PNG)


def test_fewshot_refuses_a_size_larger_than_the_pool(tmp_path, tiny_backbone, capsys):
    code = main(["fewshot", "--config", str(CONFIGS / "tiny-fewshot.yaml"), f"output_dir={tmp_path}",
                 f"model.backbone={tiny_backbone}", "fewshot.unit=documents", "fewshot.sizes=[500]"])
    assert code == 2
    assert re.search(r"fewshot\.sizes: cannot sample 500 documents from \d+ \(the training pool\)",
                     capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


def test_compare_writes_the_grid_and_skips_a_missing_backbone(tmp_path, tiny_backbone):
    output = tmp_path / "compare"
    missing = tmp_path / "no-such-model"
    metadata = run("compare", "tiny-compare.yaml", output, f"backbones=[{tiny_backbone}, {missing}]")
    grid = rows(output / "results.csv")
    assert [(r["corpus"], r["strategy"]) for r in grid] == [
        ("maccrobat", s) for s in ("finetune", "hard-prompt", "soft-prompt", "soft-prompt-frozen")]
    parameters = {r["strategy"]: int(r["trainable_parameters"]) for r in grid}
    adapter = {r["strategy"]: float(r["adapter_mib"]) for r in grid}
    assert parameters["soft-prompt-frozen"] < parameters["hard-prompt"] < parameters["soft-prompt"]
    assert adapter["soft-prompt-frozen"] < adapter["hard-prompt"]  # a frozen adapter leaves the backbone out
    assert all(float(r["train_seconds"]) > 0 and int(r["peak_memory_mib"]) > 0 for r in grid)
    assert list(metadata["outputs"]["skipped_backbones"]) == [str(missing)]
    table = (output / "results.md").read_text()
    assert table.count("\n| maccrobat |") == 4 and f"Skipped backbone {missing}" in table
    assert (output / "results.png").read_bytes().startswith(PNG)


def test_shape_study_varies_one_axis_at_a_time(tmp_path, tiny_backbone):
    output = tmp_path / "shape"
    run("shape", "tiny-shape.yaml", output, f"model.backbone={tiny_backbone}")
    variants = {r["variant"]: r for r in rows(output / "results.csv")}
    assert list(variants) == ["base", "num_virtual_tokens=2", "depth=input", "reparameterization=mlp",
                              "sharing=shared", "prompt_init=random"]
    params = {name: int(r["trainable_parameters"]) for name, r in variants.items()}
    assert params["num_virtual_tokens=2"] < params["base"]
    assert params["depth=input"] < params["base"]  # one table row per layer less
    assert params["sharing=shared"] < params["base"]  # one block instead of one per type
    assert params["reparameterization=mlp"] > params["base"]
    assert params["prompt_init=random"] == params["base"]
    assert variants["depth=input"]["depth"] == "input" and variants["depth=input"]["num_virtual_tokens"] == "4"
    assert (output / "results.md").read_text().count("\n| soft-prompt-frozen |") == 6
    assert (output / "shape.png").read_bytes().startswith(PNG)


def test_transfer_scores_in_domain_and_on_the_target(tmp_path, tiny_backbone, shared_data):
    output = tmp_path / "transfer"
    run("transfer", "tiny-transfer.yaml", output, f"model.backbone={tiny_backbone}")
    table = rows(output / "results.csv")
    assert [r["strategy"] for r in table] == ["soft-prompt-frozen", "finetune"]
    for r in table:
        assert (r["source"], r["target"], r["train_documents"]) == ("ade-corpus-v2", "psytar", "20")
        assert float(r["concept_strict_drop"]) == pytest.approx(
            float(r["in_domain_concept_strict_f1"]) - float(r["target_concept_strict_f1"]))
    assert (output / "results.md").read_text().startswith("Train on ade-corpus-v2 (20 documents); test in-domain "
                                                         "(10 documents) and on psytar (10 documents).")
    assert (output / "transfer.png").read_bytes().startswith(PNG)


def test_predictions_of_the_train_recipe_read_back_as_brat(tmp_path, tiny_backbone):
    run("train", "tiny-train.yaml", tmp_path, f"model.backbone={tiny_backbone}", "model.strategy=finetune",
        "training.head_lr=null", "training.prompt_lr=null")
    corpus = read_corpus(tmp_path / "predictions")
    assert len(corpus.documents) == 2 and not corpus.problems


def test_a_schema_that_maps_nothing_is_refused_naming_the_key(tmp_path, tiny_backbone, capsys):
    config = load_config("train", CONFIGS / "tiny-train.yaml", [])
    schema = load_schema(config.data.schema).to_dict()
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump({**schema, "mapping": {"concepts": {"NoSuchType": "Drug"}}}))
    assert main(["train", "--config", str(CONFIGS / "tiny-train.yaml"), f"output_dir={tmp_path / 'out'}",
                 f"model.backbone={tiny_backbone}", f"data.schema={tmp_path / 'schema.yaml'}"]) == 2
    error = capsys.readouterr().err
    assert "clinical-prompt: error: data.schema: schema 'maccrobat-med' maps no annotation of the" in error
    assert not (tmp_path / "out" / "model").exists()
