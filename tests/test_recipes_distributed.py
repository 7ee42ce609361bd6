"""The train recipe under ``accelerate launch --multi_gpu --num_processes 2`` on CPU (gloo) against one process.

With the same global batch (two processes x batch 1 against one process x batch 1 x 2 accumulated batches), no
dropout and a row count that two processes split evenly, the two runs take the same optimizer steps: the train
loss of every epoch agrees to 1e-5 (relative; only the order of float sums differs) and every test score is equal.
Each test document is predicted by one process and scored once; dev scoring each epoch is sharded the same way.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from clinical_prompt.cli import main
from clinical_prompt.recipes import load_config
from clinical_prompt.recipes.runs import build, load_splits
from test_mrc_extractor import save_synthetic_site

REPO = Path(__file__).resolve().parents[1]
TINY_TRAIN = REPO / "recipes" / "configs" / "tiny-train.yaml"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """A BRAT corpus of synthetic medication notes, its schema file and a tiny BERT without dropout."""
    return save_synthetic_site(
        tmp_path_factory.mktemp("synthetic"), 24, hidden_size=32, num_attention_heads=2, max_position_embeddings=128)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_reach_the_metrics_of_one(synthetic, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    overrides = [
        f"data.train={synthetic / 'corpus'}", f"data.schema={synthetic / 'schema.yaml'}", "data.train_documents=8",
        "data.test_documents=6", "data.dev_fraction=0.2", f"model.backbone={synthetic / 'bert'}",
        "model.strategy=hard-prompt", "model.max_length=64", "model.head_dropout=0.0", "model.negative_ratio=null",
        "training.epochs=6", "training.batch_size=1", "training.backbone_lr=3e-3", "training.head_lr=1e-2",
        "training.prompt_lr=null", "training.mixed_precision='no'",
    ]
    config = load_config("train", TINY_TRAIN, overrides)
    splits = load_splits(config.data, config.training.seed)
    extractor = build(splits.schema, "hard-prompt", config.model.backbone, config.model, config.prompt, 0)
    rows = extractor.training_rows(splits.training_sample(config.data, config.training.seed))
    assert len(rows) % 2 == 0, f"{len(rows)} training rows: two processes of batch 1 would pad the last batch"

    one = tmp_path / "one"
    assert main(["train", "--config", str(TINY_TRAIN), f"output_dir={one}", "training.gradient_accumulation_steps=2",
                 *overrides]) == 0
    two = tmp_path / "two"
    env = os.environ | {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", str(free_port()), "recipes/train.py", "--config", str(TINY_TRAIN),
         f"output_dir={two}", *overrides],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert re.search(r"training: \d+ examples, 6 epochs, \d+ optimizer steps, 2 processes", launched.stderr)

    single, double = (json.loads((path / "run.json").read_text()) for path in (one, two))
    assert (single["num_processes"], double["num_processes"]) == (1, 2)
    per_process = double["outputs"]["documents_per_process"]
    assert len(per_process) == 2 and min(per_process) > 0 and sum(per_process) == 6  # both ranks predicted
    metrics = [json.loads((path / "metrics.json").read_text()) for path in (one, two)]
    assert metrics[1]["documents"]["gold"] == metrics[1]["documents"]["pred"] == 6  # each document scored once
    assert metrics[0] == metrics[1]
    assert metrics[0]["concepts"]["strict"]["micro"]["f1"] > 0.3  # a model that learned something, on both sides
    assert double["outputs"]["train_loss"] == pytest.approx(single["outputs"]["train_loss"], rel=1e-5)
    assert double["outputs"]["best_epoch"] == single["outputs"]["best_epoch"]
    assert (sorted(p.name for p in (two / "predictions").iterdir())
            == sorted(p.name for p in (one / "predictions").iterdir()))
