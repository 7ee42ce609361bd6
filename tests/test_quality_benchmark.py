"""The quality benchmark (``benchmarks/quality.py``) in tiny mode: every method, ours and the stock peers, learns a
pattern it can see; each cell runs once in its own process and is skipped on rerun; missing cells are named with
why; the splits are the documented ones; the stock PEFT taggers align labels and logits by hand."""
from __future__ import annotations

import csv
import json
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml

from clinical_prompt.readers import read_documents
from clinical_prompt.recipes import ConfigError, load_config
from conftest import SHARED_DATA
from test_mrc_extractor import save_synthetic_site, synthetic_corpus

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import quality  # noqa: E402
from stock_peers import STOCK_METHODS, StockPeer  # noqa: E402

CONFIGS = REPO / "benchmarks" / "configs"
PNG = b"\x89PNG\r\n\x1a\n"
RANDOM_BACKBONE_RATES = {  # a tiny random backbone needs far larger rates than a pretrained one
    "finetune": {"backbone_lr": 3e-3, "head_lr": 1e-2},
    "hard-prompt": {"backbone_lr": 3e-3, "head_lr": 1e-2},
    "soft-prompt": {"backbone_lr": 3e-3, "head_lr": 1e-2, "prompt_lr": 1e-2},
    "soft-prompt-frozen": {"head_lr": 1e-2, "prompt_lr": 3e-2},
    "hf-token-classification": {"backbone_lr": 3e-3, "head_lr": 1e-2},
    "peft-prompt-tuning": {"head_lr": 3e-2, "prompt_lr": 3e-2},
    "peft-p-tuning": {"head_lr": 1e-2, "prompt_lr": 1e-2},
}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def in_repository(monkeypatch):
    """Shipped configs name paths relative to the repository root."""
    monkeypatch.chdir(REPO)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """Synthetic medication notes in BRAT (the same few drugs and doses repeat), their schema, and a tiny BERT."""
    return save_synthetic_site(
        tmp_path_factory.mktemp("synthetic"), 8, hidden_size=64, num_attention_heads=4, max_position_embeddings=512)


def tiny_config(synthetic: Path, directory: Path) -> Path:
    """The shipped tiny config on the tiny BERT: the synthetic corpus (trained, tuned and tested on the same notes)
    added to its corpora, every method on it and the frozen soft prompt on the others."""
    config = yaml.safe_load((CONFIGS / "tiny-quality.yaml").read_text())
    notes = str(synthetic / "corpus")
    config["output_dir"] = str(directory / "results")
    config["corpora"]["synthetic"] = {"train": notes, "dev": notes, "test": notes,
                                      "schema": str(synthetic / "schema.yaml")}
    config["backbones"] = {str(synthetic / "bert"): ["synthetic/*", "*/soft-prompt-frozen"]}
    for method, rates in RANDOM_BACKBONE_RATES.items():
        config["methods"][method].update(rates)
    config["training"].update(epochs=8, batch_size=8, mixed_precision="no")
    path = directory / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


@pytest.mark.slow
def test_tiny_mode_every_method_learns_and_a_rerun_skips_finished_cells(synthetic, tmp_path, monkeypatch):
    config = tiny_config(synthetic, tmp_path)
    only = ["--only", "synthetic/*", "--only", "maccrobat/*"]
    assert quality.main(["--config", str(config), *only]) == 0
    output = tmp_path / "results"
    rows = {(r["corpus"], r["method"]): r for r in csv_rows(output / "results.csv")}
    assert set(rows) == {("synthetic", m) for m in quality.METHODS} | {("maccrobat", "soft-prompt-frozen")}
    for method in quality.METHODS:
        row = rows["synthetic", method]
        assert float(row["concept_strict_f1"]) > 0, method
        assert int(row["epochs_run"]) >= int(row["best_epoch"]) >= 1 and float(row["peak_memory_mib"]) > 0
        assert float(row["tokens_per_second"]) > 0 and int(row["trainable_parameters"]) > 0
    for method in ("finetune", "hard-prompt", "soft-prompt"):  # the frozen prompt on a random backbone: concepts only
        assert float(rows["synthetic", method]["relation_strict_f1"]) > 0, method
    for method in STOCK_METHODS:  # no relation head
        row = rows["synthetic", method]
        assert row["relation_strict_f1"] == row["relation_lenient_f1"] == row["dev_relation_strict_f1"] == ""
    frozen = [rows["synthetic", m]["trainable_parameters"] for m in ("soft-prompt-frozen", "peft-prompt-tuning")]
    assert all(int(n) < int(rows["synthetic", "finetune"]["trainable_parameters"]) for n in frozen)

    table = (output / "results.md").read_text()
    assert "| synthetic | bert | peft-p-tuning (stock) |" in table
    assert "3 of 11 cells missing" in table
    for corpus in ("ddi", "ade", "sdoh"):
        reason = "its train documents ../shared/data" if not SHARED_DATA.is_dir() else "not run yet"
        assert f"- {corpus}/soft-prompt-frozen/bert: " in table and reason in table
    assert (output / "results.png").read_bytes().startswith(PNG)
    run = json.loads((output / "run.json").read_text())
    assert run["config"]["methods"]["peft-p-tuning"]["prompt_lr"] == 1e-2 and run["git_revision"]
    assert run["outputs"]["failed"] == [] and len(run["outputs"]["missing"]) == 3
    assert not (output / "runs").exists()  # each cell's checkpoints are removed

    cells = (output / "cells.jsonl").read_text()
    monkeypatch.setattr(quality, "run_child", lambda cell, args: pytest.fail(f"{cell.name} ran again"))
    assert quality.main(["--config", str(config), *only]) == 0
    assert (output / "cells.jsonl").read_text() == cells


def test_missing_cells_are_named_with_why(synthetic, tmp_path):
    config = yaml.safe_load((CONFIGS / "tiny-quality.yaml").read_text())
    config["corpora"] = {"maccrobat": config["corpora"]["maccrobat"],
                         "absent": {"train": str(tmp_path / "nowhere"), "test_documents": 1, "schema": "ddi"}}
    config["methods"] = {"finetune": config["methods"]["finetune"]}
    config["backbones"] = {str(synthetic / "bert"): ["*"], str(tmp_path / "no-model"): ["maccrobat/*"]}
    config["output_dir"] = str(tmp_path / "results")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert quality.main(["--config", str(tmp_path / "config.yaml"), "--table-only"]) == 0
    table = (tmp_path / "results" / "results.md").read_text()
    assert "3 of 3 cells missing" in table
    assert f"- absent/finetune/bert: corpus absent: its train documents {tmp_path / 'nowhere'} are absent" in table
    assert "- maccrobat/finetune/bert: not run yet" in table
    assert "- maccrobat/finetune/no-model: backbone " in table and "cannot be loaded" in table
    assert csv_rows(tmp_path / "results" / "results.csv") == []


def test_a_cells_new_row_replaces_its_old_one(tmp_path):
    quality.append_row(tmp_path, {"cell": "a/finetune/minilm", "concept_strict_f1": 0.1})
    quality.append_row(tmp_path, {"cell": "b/finetune/minilm", "concept_strict_f1": 0.2})
    quality.append_row(tmp_path, {"cell": "a/finetune/minilm", "concept_strict_f1": 0.3})
    rows = quality.read_rows(tmp_path)
    assert [(name, row["concept_strict_f1"]) for name, row in rows.items()] == [("b/finetune/minilm", 0.2),
                                                                               ("a/finetune/minilm", 0.3)]


def test_grids_side_by_side_keep_every_row(tmp_path):
    def grid(name: str) -> None:
        for i in range(40):
            quality.append_row(tmp_path, {"cell": f"{name}/{i}", "concept_strict_f1": i / 40})

    threads = [threading.Thread(target=grid, args=(name,)) for name in ("ddi", "maccrobat")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(quality.read_rows(tmp_path)) == 80


@pytest.mark.parametrize("override, message", [
    ("methods.crf={}", r"methods\.crf: unknown method"),
    ("methods.peft-p-tuning.prompt_lr=null", r"methods\.peft-p-tuning\.prompt_lr: required"),
    ("methods.soft-prompt-frozen.backbone_lr=1e-5", r"soft-prompt-frozen does not train the backbone"),
    ("corpora.maccrobat.test_fraction=0.1", r"corpora\.maccrobat\.test: without a test path, give one of"),
    ("training.early_stopping_patience=null", r"training\.early_stopping_patience: required"),
])
def test_the_config_refuses_values_that_do_not_go_together(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(quality.QualityBenchmark, CONFIGS / "quality.yaml", [override])


def test_the_full_size_splits():
    config = load_config(quality.QualityBenchmark, CONFIGS / "quality.yaml")
    names = sorted(d.doc_id for d in read_documents("bundled:maccrobat2020"))
    maccrobat = quality.load_corpus(config.corpora["maccrobat"], config.training.seed)
    assert sorted(d.doc_id for d in maccrobat.pool + maccrobat.dev) == names[:150]
    assert [d.doc_id for d in maccrobat.test] == names[150:] and len(maccrobat.dev) == 15
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available")
    splits = {name: quality.load_corpus(corpus, config.training.seed) for name, corpus in config.corpora.items()}
    sizes = {name: (len(s.pool), len(s.dev), len(s.test)) for name, s in splits.items() if name != "maccrobat"}
    assert sizes == {"ddi": (515, 57, 212), "ade": (3418, 427, 427), "sdoh": (251, 73, 37)}
    ade = splits["ade"]
    ids = [{d.doc_id for d in split} for split in (ade.pool, ade.dev, ade.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert all(d.entities for d in ade.pool + ade.dev + ade.test)
    assert [c.name for c in quality.grid(config) if c.backbone == "mpnet"] == [
        "ddi/finetune/mpnet", "ddi/soft-prompt/mpnet", *(f"ade/{m}/mpnet" for m in quality.METHODS)]


@pytest.mark.parametrize("method", STOCK_METHODS)
def test_stock_taggers_align_labels_and_logits_by_hand(synthetic, method):
    torch.manual_seed(0)
    peer = StockPeer(method, str(synthetic / "bert"), ["Drug", "Dosage"], max_length=16)
    documents = synthetic_corpus(2, seed=3)
    batch = peer.collate(peer.rows(documents))
    output = peer.tagger(**batch)
    assert output["logits"].shape[:2] == batch["input_ids"].shape
    by_hand = torch.nn.functional.cross_entropy(output["logits"].flatten(0, 1), batch["labels"].flatten())
    assert torch.allclose(output["loss"], by_hand)
    trained = {n.split(".")[0] for n, p in peer.tagger.model.named_parameters() if p.requires_grad}
    assert trained == ({"bert", "classifier"} if method == "hf-token-classification"
                       else {"base_model", "prompt_encoder"})


def test_stock_labels_decode_back_to_the_gold_spans(synthetic):
    peer = StockPeer("hf-token-classification", str(synthetic / "bert"), ["Drug", "Dosage"], max_length=16)
    documents = synthetic_corpus(3, seed=4)
    windows = peer.windows(documents)
    for document in documents:
        decoded = sorted(s for w in windows if w["doc"] is document for s in peer.spans(w, w["labels"]))
        assert decoded == sorted((e.start, e.end, e.type) for e in document.entities.values())
