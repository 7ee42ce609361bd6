"""Crash and resume, and two writers, with real processes.

A soft-prompt extractor on a tiny random BERT trains in a subprocess (checkpoint every epoch, ``resume=True``) and
is SIGKILLed again and again (``PLAN``): at seeded random times (mid-step), inside ``Accelerator.save_state``,
inside the sealing of a checkpoint and inside the saving of the adapter. Each time it is started again, until it
completes; its saved adapter must equal, byte for byte, the adapter of an uninterrupted run. Meanwhile a second run
pointed at the same output directory must be refused, and the lock each killed run leaves must be taken over.

Run as a script, this file is the training process: ``test_crash_resume.py BACKBONE RUN_DIR ADAPTER_DIR PAUSE
MARKER``. PAUSE ``writing:N`` stops it inside ``save_state`` of epoch N (before the optimizer state is written),
``sealing:N`` before the ``COMPLETE`` marker of epoch N, ``adapter`` before ``extractor.json`` (the saved
adapter's completeness marker); it then creates MARKER and sleeps, to be killed. Any other PAUSE runs to the end.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SEED = 7
EPOCHS = 4
WAIT_SECONDS = 240.0  # for any one event; the test fails rather than hangs
TRAINING_STARTED = re.compile(r"^training: \d+ examples", re.MULTILINE)  # the loop's first log line


def train_and_save(backbone: str, run_dir: Path, adapter_dir: Path) -> None:
    """The training process's work: build, fit (resuming from the newest complete checkpoint), save."""
    import torch

    from clinical_prompt.extractors import build_extractor
    from clinical_prompt.fit import fit
    from clinical_prompt.training import TrainingConfig
    from test_mrc_extractor import RATES, SCHEMA, synthetic_corpus

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        extractor = build_extractor("soft-prompt", SCHEMA, backbone, max_length=64)
        config = TrainingConfig(output_dir=run_dir, num_epochs=EPOCHS, per_device_batch_size=4,
                                mixed_precision="no", seed=0, resume=True)
        fit(extractor, synthetic_corpus(6, seed=0), None, config, learning_rates=RATES["soft-prompt"])
        extractor.save_pretrained(adapter_dir)
    finally:
        torch.set_num_threads(threads)


def pause_in(module: object, name: str, stops: Callable[..., bool], marker: Path) -> None:
    """Make ``module.name`` create ``marker`` and sleep (to be killed) when ``stops(*args)`` holds."""
    original = getattr(module, name)

    def paused(*args, **kwargs):
        if stops(*args):
            marker.touch()
            time.sleep(600)
        return original(*args, **kwargs)

    setattr(module, name, paused)


def main(backbone: str, run_dir: str, adapter_dir: str, pause: str, marker: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    where, _, epoch = pause.partition(":")
    partial = f"epoch-{epoch}.partial"
    if where == "writing":  # inside save_state: the weights are written, the optimizer state is not
        from accelerate import checkpointing
        pause_in(checkpointing, "save", lambda state, path: Path(path).parent.name == partial
                 and Path(path).name == "optimizer.bin", Path(marker))
    elif where == "sealing":  # save_state is done, the COMPLETE marker not written
        from clinical_prompt.training import checkpoints
        pause_in(checkpoints, "_checksum", lambda directory: directory.name == partial, Path(marker))
    elif where == "adapter":  # the tensors are written, extractor.json is not
        from clinical_prompt.extractors.mrc import extractor
        pause_in(extractor, "write_json", lambda path, data: Path(path).name == "extractor.json", Path(marker))
    train_and_save(backbone, Path(run_dir), Path(adapter_dir))


# --- the test side ------------------------------------------------------------------------------------------------

class Run:
    """One training process, its output in a log file."""

    def __init__(self, backbone: Path, run_dir: Path, adapter_dir: Path, log: Path, pause: str = "end") -> None:
        self.log, self.marker = log, log.with_suffix(".paused")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        with log.open("w") as stream:
            self.process = subprocess.Popen(
                [sys.executable, __file__, str(backbone), str(run_dir), str(adapter_dir), pause, str(self.marker)],
                stdout=stream, stderr=subprocess.STDOUT, env=env)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until(self, event: Callable[[], bool]) -> bool:
        """Poll ``event`` until it holds (True) or the process ends (False)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while not event():
            if self.process.poll() is not None:
                return False
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"timed out waiting; output:\n{self.output[-3000:]}")
            time.sleep(0.002)
        return True

    def finish(self) -> None:
        assert self.process.wait(timeout=WAIT_SECONDS) == 0, self.output[-3000:]
        assert "Traceback" not in self.output, self.output[-3000:]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def newest_sealed(run_dir: Path) -> Path | None:
    """The newest sealed checkpoint; every sealed one must check out (a half-written one is never sealed)."""
    from clinical_prompt.training.checkpoints import epoch_dirs, is_complete

    sealed = epoch_dirs(run_dir / "checkpoints")
    assert all(is_complete(path) for path in sealed.values()), sorted(sealed)
    return sealed[max(sealed)] if sealed else None


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# Where each attempt is killed: at a random time after training starts, inside save_state of epoch 2 (weights
# written, optimizer not), inside the sealing of epoch 3 (files written, no COMPLETE), at a random time again, inside
# the adapter's saving; the last attempt ends.
PLAN = ["random", "writing:2", "sealing:3", "random", "adapter", "end"]
NEWEST_AFTER = {"writing:2": "epoch-1", "sealing:3": "epoch-2", "adapter": "epoch-4"}


@pytest.mark.slow
def test_sigkilled_training_resumes_to_the_adapter_of_an_uninterrupted_run(tmp_path):
    from clinical_prompt.extractors import ExtractorFormatError, load_extractor
    from clinical_prompt.lock import LOCK_NAME
    from clinical_prompt.training import COMPLETE_NAME
    from conftest import save_tiny_bert
    from test_mrc_extractor import VOCAB

    started = time.perf_counter()
    backbone = save_tiny_bert(tmp_path / "bert", VOCAB, hidden_size=32, num_attention_heads=2,
                              max_position_embeddings=128)
    training_started = time.monotonic()  # the uninterrupted run, in this process
    train_and_save(str(backbone), tmp_path / "reference", tmp_path / "reference-adapter")
    training_seconds = time.monotonic() - training_started

    rng, host = random.Random(SEED), socket.gethostname()
    run_dir, adapter_dir = tmp_path / "run", tmp_path / "adapter"
    checkpoints, lock = run_dir / "checkpoints", run_dir / LOCK_NAME
    kills = []
    for attempt, where in enumerate(PLAN):
        resume_from, stale = newest_sealed(run_dir), json.loads(lock.read_text())["pid"] if lock.exists() else None
        run = Run(backbone, run_dir, adapter_dir, tmp_path / f"attempt-{attempt}.log", pause=where)
        if where == "random":
            assert run.wait_until(lambda run=run: TRAINING_STARTED.search(run.output)), run.output[-3000:]
            time.sleep(rng.uniform(0.02, 0.2) * training_seconds)  # within the first epoch this run trains
        elif where != "end":
            assert run.wait_until(run.marker.exists), run.output[-3000:]
        if where.startswith("sealing"):  # the run holds the lock: a second run on the directory is refused
            second = Run(backbone, run_dir, tmp_path / "second-adapter", tmp_path / "second.log")
            assert second.process.wait(timeout=WAIT_SECONDS) != 0
            assert (f"OutputDirInUseError: output_dir {run_dir} is in use by process {run.process.pid}@{host} "
                    f"(lock file {lock})") in second.output
            assert not TRAINING_STARTED.search(second.output) and not (tmp_path / "second-adapter").exists()
        if where == "end" or run.process.poll() is not None:  # a random time may come after a short run's end
            run.finish()
        else:
            run.kill()
            kills.append(where)

        output = run.output  # it resumed from the newest sealed checkpoint and took over the lock a kill left
        assert (f"resuming from {resume_from} " if resume_from else f"no complete checkpoint in {checkpoints}") \
            in output, output[-3000:]
        if stale is not None:
            assert f"taking over stale lock {lock} left by process {stale}@{host}, which is gone" in output
        else:
            assert "taking over stale lock" not in output
        newest = newest_sealed(run_dir)
        if where in NEWEST_AFTER:
            assert newest is not None and newest.name == NEWEST_AFTER[where]
        if where.startswith(("writing", "sealing")):  # the half-written checkpoint is there, not sealed
            partial = checkpoints / f"epoch-{where.partition(':')[2]}.partial"
            assert (partial / "model.safetensors").is_file() and not (partial / COMPLETE_NAME).exists()
            assert (partial / "optimizer.bin").is_file() == where.startswith("sealing")
        if where == "adapter":  # the half-saved adapter is not taken for one
            assert (adapter_dir / "adapter_model.safetensors").is_file() and not lock.exists()
            with pytest.raises(ExtractorFormatError, match="extractor.json"):
                load_extractor(adapter_dir)

    assert {"random", "writing:2", "sealing:3", "adapter"} <= set(kills)
    assert not lock.exists() and not list(checkpoints.glob("*.partial"))
    assert files_of(adapter_dir) == files_of(tmp_path / "reference-adapter")
    print(f"kills survived: {len(kills)} ({', '.join(kills)}), a second writer refused; uninterrupted training "
          f"{training_seconds:.1f} s; test {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main(*sys.argv[1:])
