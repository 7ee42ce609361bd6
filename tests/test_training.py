"""The training loop on a tiny model: learning, frozen weights, resume, checkpoints, early stopping, lock, logs."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from clinical_prompt.lock import LOCK_NAME, OutputDirInUseError
from clinical_prompt.training import COMPLETE_NAME, TrainingConfig, default_param_groups, train

VOCAB, SEQ_LEN, HIDDEN = 30, 6, 16
MARKER_TOKEN = 7  # an example's label is whether it holds this token


class TinyClassifier(nn.Module):
    """Embedding, mean pooling, Linear + LayerNorm + dropout, linear head; returns a dict with a loss."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.body = nn.Linear(HIDDEN, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(HIDDEN, 2)

    def forward(self, input_ids, attention_mask, labels):
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1)
        logits = self.head(self.dropout(torch.relu(self.norm(self.body(pooled)))))
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


def make_dataset(n: int = 40, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(n):
        ids = torch.randint(0, VOCAB, (SEQ_LEN,), generator=generator)
        length = int(torch.randint(3, SEQ_LEN + 1, (1,), generator=generator))
        mask = (torch.arange(SEQ_LEN) < length).long()
        label = int((ids[:length] == MARKER_TOKEN).any() or ids[0] < VOCAB // 3)
        examples.append({"input_ids": ids, "attention_mask": mask, "labels": torch.tensor(label)})
    return examples


def collate(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([e[key] for e in examples]) for key in examples[0]}


def make_model(seed: int = 0) -> TinyClassifier:
    torch.manual_seed(seed)
    return TinyClassifier()


def config(output_dir: Path, **overrides) -> TrainingConfig:
    values = dict(num_epochs=3, per_device_batch_size=4, learning_rate=1e-2, warmup_ratio=0.1, seed=13,
                  log_every_steps=3, mixed_precision="no")
    return TrainingConfig(output_dir=output_dir, **{**values, **overrides})


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def accuracy_fn(dataset):
    def evaluate(model: nn.Module) -> dict[str, float]:
        batch = collate(dataset)
        predictions = model(**batch)["logits"].argmax(-1)
        return {"strict_f1": (predictions == batch["labels"]).float().mean().item()}
    return evaluate


class Crash(Exception):
    pass


def crashing_collate(after_calls: int):
    calls = {"n": 0}

    def collate_or_crash(examples):
        calls["n"] += 1
        if calls["n"] > after_calls:
            raise Crash()
        return collate(examples)
    return collate_or_crash


def test_loss_falls_and_reports_figures(tmp_path):
    result = train(make_model(), make_dataset(), config=config(tmp_path, num_epochs=6), collate_fn=collate)
    losses = [entry["train_loss"] for entry in result.history]
    assert [entry["epoch"] for entry in result.history] == list(range(1, 7))
    assert losses[-1] < 0.7 * losses[0]
    assert result.tokens_per_second > 0 and result.peak_memory_bytes > 0 and not result.stopped_early
    assert not (tmp_path / LOCK_NAME).exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch-5", "epoch-6"]


def test_only_trainable_parameters_change_and_get_optimizer_state(tmp_path):
    model = make_model()
    for param in [*model.embed.parameters(), *model.body.parameters()]:
        param.requires_grad_(False)
    before = snapshot(model)
    train(model, make_dataset(), config=config(tmp_path, num_epochs=2), collate_fn=collate)
    after = snapshot(model)
    for name in before:
        frozen = name.startswith(("embed.", "body."))
        assert torch.equal(before[name], after[name]) == frozen, name

    checkpoint = tmp_path / "checkpoints" / "epoch-2"
    optimizer = torch.load(checkpoint / "optimizer.bin", weights_only=False)
    trainable = sum(p.requires_grad for p in model.parameters())
    assert sum(len(group["params"]) for group in optimizer["param_groups"]) == trainable == len(optimizer["state"])
    saved = load_file(checkpoint / "model.safetensors")
    assert not any(name.startswith(("embed.", "body.")) for name in saved)
    assert {"head.weight", "norm.weight"} <= saved.keys()


def test_param_groups_get_their_learning_rates(tmp_path):
    model = make_model()
    groups = [
        {"params": list(model.head.parameters()), "lr": 5e-2, "weight_decay": 0.0},
        {"params": list(model.body.parameters()) + list(model.embed.parameters()), "lr": 0.0},
        {"params": list(model.norm.parameters()), "lr": 1e-3, "weight_decay": 0.1},
    ]
    model.embed.weight.requires_grad_(False)
    before = snapshot(model)
    train(model, make_dataset(), config=config(tmp_path, num_epochs=1), collate_fn=collate, param_groups=groups)
    after = snapshot(model)
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert not torch.equal(before["norm.weight"], after["norm.weight"])
    assert torch.equal(before["body.weight"], after["body.weight"])  # lr 0: unchanged, weight decay included
    optimizer = torch.load(tmp_path / "checkpoints" / "epoch-1" / "optimizer.bin", weights_only=False)
    assert [(g["initial_lr"], g["weight_decay"]) for g in optimizer["param_groups"]] == [
        (5e-2, 0.0), (0.0, 0.01), (1e-3, 0.1)]
    assert [len(g["params"]) for g in optimizer["param_groups"]] == [2, 2, 2]  # frozen embed.weight left out


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    """Two batches of 2 per optimizer step follow the same path as batches of 4 (scheduler steps per update)."""
    models = []
    for name, batch_size, accumulation in [("big", 4, 1), ("accumulated", 2, 2)]:
        model = make_model()
        model.dropout.p = 0.0
        result = train(model, make_dataset(), collate_fn=collate, config=config(
            tmp_path / name, num_epochs=2, per_device_batch_size=batch_size, gradient_accumulation_steps=accumulation))
        state = json.loads((tmp_path / name / "checkpoints" / "epoch-2" / "training_state.json").read_text())
        assert state["global_step"] == 20 and result.tokens_per_second > 0
        models.append(snapshot(model))
    for name in models[0]:
        torch.testing.assert_close(models[0][name], models[1][name], rtol=1e-4, atol=1e-5)
    assert not torch.equal(models[0]["head.weight"], make_model().head.weight)


def test_batches_group_examples_of_similar_length(tmp_path):
    """Length grouping pads little and still shows every example once per epoch; the plain order pads much more."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 41, (96,), generator=generator).tolist()
    examples = [{"input_ids": torch.randint(0, VOCAB, (n,), generator=generator).tolist(), "labels": i % 2, "id": i}
                for i, n in enumerate(lengths)]
    real = sum(len(e["input_ids"]) for e in examples)

    def run(name: str, group_by_length: bool) -> tuple[int, list[list[int]]]:
        padded, seen = [0], []

        def padding_collate(batch: list[dict]) -> dict[str, torch.Tensor]:
            width = max(len(e["input_ids"]) for e in batch)
            padded[0] += width * len(batch)
            seen.append([e["id"] for e in batch])
            ids = [e["input_ids"] + [0] * (width - len(e["input_ids"])) for e in batch]
            mask = [[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in batch]
            return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
                    "labels": torch.tensor([e["labels"] for e in batch])}

        train(make_model(), examples, collate_fn=padding_collate, config=config(
            tmp_path / name, num_epochs=2, group_by_length=group_by_length, save_every_epoch=False))
        return padded[0], seen

    grouped, grouped_batches = run("grouped", True)
    plain, _ = run("plain", False)
    assert grouped < 1.15 * 2 * real < plain / 1.3, (grouped, plain, 2 * real)
    for epoch in (grouped_batches[:24], grouped_batches[24:]):
        assert sorted(i for batch in epoch for i in batch) == list(range(96))
    assert grouped_batches[:24] != grouped_batches[24:]  # shuffled anew each epoch


def test_default_param_groups_skip_decay_on_bias_and_layernorm():
    model = make_model()
    model.head.bias.requires_grad_(False)
    decay, no_decay = default_param_groups(model, learning_rate=1e-3, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["body.weight", "embed.weight", "head.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["body.bias", "norm.bias", "norm.weight"]
    assert (decay["lr"], decay["weight_decay"], no_decay["weight_decay"]) == (1e-3, 0.05, 0.0)


def test_resume_after_a_crash_matches_an_uninterrupted_run_bit_for_bit(tmp_path):
    dataset, dev = make_dataset(), make_dataset(12, seed=1)
    kwargs = dict(evaluate_fn=accuracy_fn(dev))
    uninterrupted = make_model()
    full = train(uninterrupted, dataset, config=config(tmp_path / "full", load_best_at_end=False),
                 collate_fn=collate, **kwargs)

    batches_per_epoch = len(dataset) // 4
    with pytest.raises(Crash):  # killed in the middle of epoch 2
        train(make_model(), dataset, config=config(tmp_path / "run", load_best_at_end=False),
              collate_fn=crashing_collate(batches_per_epoch + 3), **kwargs)
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["epoch-1"]

    resumed_model = make_model()
    resumed = train(resumed_model, dataset, config=config(tmp_path / "run", resume=True, load_best_at_end=False),
                    collate_fn=collate, **kwargs)
    assert_same_state(snapshot(uninterrupted), snapshot(resumed_model))
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    assert [h["metrics"] for h in resumed.history] == [h["metrics"] for h in full.history]


def test_incomplete_checkpoints_are_skipped(tmp_path, caplog):
    dataset = make_dataset()
    reference = make_model()
    train(reference, dataset, config=config(tmp_path / "ref", num_epochs=3), collate_fn=collate)

    run = tmp_path / "run"
    train(make_model(), dataset, config=config(run, num_epochs=3, save_total_limit=3), collate_fn=collate)
    checkpoints = run / "checkpoints"
    (checkpoints / "epoch-3" / COMPLETE_NAME).unlink()  # never sealed
    with (checkpoints / "epoch-2" / "model.safetensors").open("r+b") as f:  # corrupted after sealing
        f.seek(-1, os.SEEK_END)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    shutil.copytree(checkpoints / "epoch-1", checkpoints / "epoch-4.partial")  # half-written

    with pytest.raises(ValueError, match="incomplete"):
        train(make_model(), dataset, config=config(run, resume=checkpoints / "epoch-2"), collate_fn=collate)

    counted = {"batches": 0}

    def counting_collate(examples):
        counted["batches"] += 1
        return collate(examples)

    resumed = make_model()
    with caplog.at_level(logging.WARNING, logger="clinical_prompt.lock"):
        train(resumed, dataset, config=config(run, resume=True), collate_fn=counting_collate)
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping incomplete")]
    assert skipped == [f"skipping incomplete checkpoint {checkpoints / 'epoch-3'}",
                       f"skipping incomplete checkpoint {checkpoints / 'epoch-2'}"]
    assert counted["batches"] == 2 * len(dataset) // 4  # epochs 2 and 3 trained again
    assert_same_state(snapshot(reference), snapshot(resumed))
    assert (checkpoints / "epoch-3" / COMPLETE_NAME).is_file()


def test_early_stopping_restores_the_best_epoch(tmp_path):
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9])
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def evaluate(model):
        seen[len(seen) + 1] = snapshot(model)
        return {"strict_f1": next(scores), "loss": 1.0}

    model = make_model()
    result = train(model, make_dataset(), collate_fn=collate, evaluate_fn=evaluate,
                   config=config(tmp_path, num_epochs=5, early_stopping_patience=2, save_total_limit=1))
    assert result.stopped_early and (result.best_epoch, result.best_metric) == (2, 0.7)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4] and len(seen) == 4
    assert_same_state(seen[2], snapshot(model))
    assert not torch.equal(seen[4]["head.weight"], seen[2]["head.weight"])
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch-2", "epoch-4"]


def test_missing_metric_for_best_is_named(tmp_path):
    with pytest.raises(KeyError, match="strict_f1"):
        train(make_model(), make_dataset(8), config=config(tmp_path, num_epochs=1), collate_fn=collate,
              evaluate_fn=lambda model: {"lenient_f1": 1.0})


LOCK_HOLDER = """
import fcntl, json, os, socket, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
print("locked", flush=True)
time.sleep(120)
"""


def test_output_dir_in_use_is_refused_and_the_lock_of_a_killed_holder_taken_over(tmp_path, caplog):
    """Another process holding the lock refuses the run; SIGKILLed, it leaves the file but not the lock."""
    lock = tmp_path / LOCK_NAME
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(OutputDirInUseError, match=f"in use by process {holder.pid}@"):
            train(make_model(), make_dataset(8), config=config(tmp_path, num_epochs=1), collate_fn=collate)
        assert json.loads(lock.read_text())["pid"] == holder.pid
        assert not (tmp_path / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    assert json.loads(lock.read_text())["pid"] == holder.pid  # left behind by the killed process
    with caplog.at_level(logging.WARNING, logger="clinical_prompt.lock"):
        result = train(make_model(), make_dataset(8), config=config(tmp_path, num_epochs=1), collate_fn=collate)
    assert len(result.history) == 1 and not lock.exists()
    assert [r.getMessage() for r in caplog.records] == [
        f"taking over stale lock {lock} left by process {holder.pid}@{socket.gethostname()}, which is gone"]


def test_lock_file_of_a_live_process_that_holds_no_lock_is_stale(tmp_path):
    """Only the OS lock counts: a pid in the file, even of a live process (a reused pid), does not block."""
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    result = train(make_model(), make_dataset(8), config=config(tmp_path, num_epochs=1), collate_fn=collate)
    assert len(result.history) == 1 and not (tmp_path / LOCK_NAME).exists()


def test_checkpoints_are_synced_before_the_rename_publishes_them(tmp_path, monkeypatch):
    synced, renamed = [], []
    real_fsync, real_replace = os.fsync, os.replace
    fd_path = Path("/proc/self/fd")
    if not fd_path.is_dir():
        pytest.skip("needs /proc/self/fd to name synced descriptors")
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(Path(os.readlink(fd_path / str(fd)))) or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: renamed.append((Path(a), len(synced))) or real_replace(a, b))
    train(make_model(), make_dataset(8), config=config(tmp_path, num_epochs=1), collate_fn=collate)
    checkpoints = (tmp_path / "checkpoints").resolve()
    partial, synced_before = next((a, n) for a, n in renamed if a.name == "epoch-1.partial")
    files = {p.relative_to(checkpoints / "epoch-1") for p in (checkpoints / "epoch-1").rglob("*")}
    assert COMPLETE_NAME in {f.name for f in files} and len(files) >= 5
    before = synced[:synced_before]
    assert {partial.resolve() / f for f in files} | {partial.resolve()} <= set(before)
    assert checkpoints in synced[synced_before:]  # the rename itself


def test_lock_is_held_during_the_run(tmp_path):
    held = {}

    def evaluate(model):
        held["lock"] = json.loads((tmp_path / LOCK_NAME).read_text())
        return {"strict_f1": 0.0}

    train(make_model(), make_dataset(8), config=config(tmp_path, num_epochs=1), collate_fn=collate,
          evaluate_fn=evaluate)
    assert held["lock"]["pid"] == os.getpid()


LOG_LINES = [  # every line the loop may write, as the module docstring documents them
    r"training: \d+ examples, \d+ epochs, \d+ optimizer steps, \d+ processes",
    r"resuming from \S+/checkpoints/epoch-\d+ \(epoch \d+, step \d+\)",
    r"skipping incomplete checkpoint \S+/checkpoints/epoch-\d+",
    r"no complete checkpoint in \S+/checkpoints: starting afresh",
    r"early stopping after epoch \d+: no strict_f1 improvement for \d+ epochs",
    r"epoch \d+ step \d+ loss \d+\.\d{4} lr [0-9.e,+-]+",
    r"epoch \d+ done: train_loss \d+\.\d{4}, metrics (-|strict_f1=\d\.\d{4}), \d+\.\d s",
    r"saved checkpoint \S+/checkpoints/epoch-\d+",
    r"restored the best model \(epoch \d+, strict_f1 \d\.\d{4}\)",
    r"done: \d+ epochs, best epoch (\d+|None), \d+\.\d s, peak memory \d+ bytes, tokens/s [0-9.]+",
]


def test_log_lines_hold_only_documented_fields(tmp_path, caplog):
    dataset = make_dataset()
    with caplog.at_level(logging.DEBUG):
        train(make_model(), dataset, config=config(tmp_path, num_epochs=2), collate_fn=collate,
              evaluate_fn=accuracy_fn(dataset[:8]))
    ours = [r.getMessage() for r in caplog.records if r.name == "clinical_prompt.training"]
    assert any(line.startswith("epoch 1 step 3 loss") for line in ours)
    for line in ours:
        assert any(re.fullmatch(pattern, line) for pattern in LOG_LINES), line
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert "tensor(" not in everything and "input_ids" not in everything


@pytest.mark.parametrize("field, value, message", [
    ("mixed_precision", "fp8", "mixed_precision must be one of no, fp16, bf16, auto"),
    ("num_epochs", 0, "num_epochs must be an integer >= 1"),
    ("warmup_ratio", 1.0, r"warmup_ratio must be in \[0, 1\)"),
    ("early_stopping_patience", 0, "early_stopping_patience must be >= 1"),
    ("resume", 3, "resume must be True, False or a checkpoint path"),
])
def test_config_validation_names_field_and_allowed_values(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(output_dir=tmp_path, **{field: value})


def test_early_stopping_needs_evaluation_every_epoch(tmp_path):
    with pytest.raises(ValueError, match="eval_every_epoch"):
        TrainingConfig(output_dir=tmp_path, early_stopping_patience=2, eval_every_epoch=False)


def test_two_processes_train_in_step(tmp_path):
    """``accelerate launch --multi_gpu --num_processes 2`` on CPU (gloo): both ranks end with the same weights.

    Without GPUs, accelerate runs the processes as MULTI_CPU only with ``ACCELERATE_USE_CPU=1``.
    """
    started = time.perf_counter()
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", "29533", __file__, str(tmp_path)]
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank-{i}.json").read_text()) for i in range(2)]
    assert [r["processes"] for r in ranks] == [2, 2]
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["history"] == ranks[1]["history"] and len(ranks[0]["history"]) == 2
    assert ranks[0]["history"][-1]["train_loss"] < ranks[0]["history"][0]["train_loss"]
    checkpoint = tmp_path / "run" / "checkpoints" / "epoch-2"
    assert {"random_states_0.pkl", "random_states_1.pkl", COMPLETE_NAME} <= {p.name for p in checkpoint.iterdir()}
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    print(f"two-process run: {time.perf_counter() - started:.1f} s")


def _two_process_main(out: Path) -> None:
    from accelerate import Accelerator

    accelerator = Accelerator()
    dataset, dev = make_dataset(), make_dataset(8, seed=1)

    def evaluate(model):
        shard = dev[accelerator.process_index::accelerator.num_processes]
        batch = collate(shard)
        correct = accelerator.gather_for_metrics((model(**batch)["logits"].argmax(-1) == batch["labels"]).float())
        return {"strict_f1": correct.mean().item()}

    model = make_model()
    result = train(model, dataset, config=config(out / "run", num_epochs=2), collate_fn=collate,
                   evaluate_fn=evaluate, accelerator=accelerator)
    weights = {name: tensor.flatten().tolist() for name, tensor in accelerator.unwrap_model(model).state_dict().items()}
    history = [{k: v for k, v in h.items() if k != "seconds"} for h in result.history]
    (out / f"rank-{accelerator.process_index}.json").write_text(json.dumps(
        {"weights": weights, "history": history, "processes": accelerator.num_processes}))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    _two_process_main(Path(sys.argv[1]))
