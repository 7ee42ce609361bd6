"""Checkpoints: ``output_dir/checkpoints/epoch-{n}`` at the end of an epoch, written by ``Accelerator.save_state`` into
``epoch-{n}.partial``, synced to disk (files, then directories) and renamed into place once complete; a ``COMPLETE``
file holds the SHA-256 of every other file and is checked before a checkpoint is used, so a run killed at any point
(mid-write too, or by a power loss) never resumes from half a checkpoint. Frozen parameters never change, so
checkpoints hold only trainable parameters and buffers (plus optimizer, scheduler, RNG states and
``training_state.json``); resuming needs the same model, built the same way. Resuming works at epoch boundaries: a
run killed mid-epoch restarts that epoch from the last complete checkpoint, and with the same config and seed it ends
with the same weights as an uninterrupted run (bit for bit on CPU), because the data order of an epoch depends only on
``(seed, epoch)`` and RNG states are restored.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from clinical_prompt.atomic import sync_path

logger = logging.getLogger(__package__)  # the run's one logger, clinical_prompt.training

COMPLETE_NAME = "COMPLETE"
STATE_NAME = "training_state.json"
_EPOCH_DIR = re.compile(r"epoch-(\d+)")


@dataclass
class LoopState:
    """The loop's part of a checkpoint (``training_state.json``)."""

    epoch: int = 0
    global_step: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def read_loop_state(checkpoint: Path) -> LoopState:
    """The loop's state saved in ``checkpoint``."""
    return LoopState(**json.loads((checkpoint / STATE_NAME).read_text()))


def drop_frozen_weights(models: list[nn.Module], weights: list[dict[str, torch.Tensor]], output_dir: str) -> None:
    """``save_state`` hook: frozen parameters never change, so they are left out of checkpoints."""
    for model, state_dict in zip(models, weights):
        for name, param in model.named_parameters():
            if not param.requires_grad:
                state_dict.pop(name, None)


def save_checkpoint(accelerator: Accelerator, checkpoints: Path, state: LoopState, keep_last: int) -> None:
    """Write ``epoch-{n}.partial`` on every process (RNG states are per process), then seal and rename it."""
    final = checkpoints / f"epoch-{state.epoch}"
    partial = final.with_name(final.name + ".partial")
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / STATE_NAME).write_text(json.dumps(asdict(state), indent=1))
        (partial / COMPLETE_NAME).write_text(_checksum(partial))
        _sync_tree(partial)  # on disk before the rename publishes it
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        sync_path(checkpoints)
        logger.info("saved checkpoint %s", final)
        _remove_old_checkpoints(checkpoints, state, keep_last)
    accelerator.wait_for_everyone()


def _remove_old_checkpoints(checkpoints: Path, state: LoopState, keep_last: int) -> None:
    """Keep the newest ``keep_last`` checkpoints up to this epoch, and the best; later ones are from an older run."""
    dirs = epoch_dirs(checkpoints)
    keep = set(sorted(e for e in dirs if e <= state.epoch)[-keep_last:]) | {state.best_epoch}
    for epoch, path in dirs.items():
        if epoch not in keep:
            shutil.rmtree(path)
    for leftover in checkpoints.glob("*.partial"):
        shutil.rmtree(leftover)


def epoch_dirs(checkpoints: Path) -> dict[int, Path]:
    """The ``epoch-{n}`` directories in ``checkpoints`` by epoch, sealed or not."""
    if not checkpoints.is_dir():
        return {}
    return {int(m.group(1)): p for p in checkpoints.iterdir() if (m := _EPOCH_DIR.fullmatch(p.name)) and p.is_dir()}


def _sync_tree(directory: Path) -> None:
    """Flush every file under ``directory`` to disk, then every directory's entries."""
    paths = sorted(directory.rglob("*"))
    for path in [p for p in paths if p.is_file()] + [p for p in paths if p.is_dir()] + [directory]:
        sync_path(path)


def _checksum(directory: Path) -> str:
    """SHA-256 over the relative paths and contents of every file under ``directory`` but the marker."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != COMPLETE_NAME):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def is_complete(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` is sealed: its marker holds the checksum of its files."""
    marker = checkpoint / COMPLETE_NAME
    return marker.is_file() and marker.read_text().strip() == _checksum(checkpoint)


def checkpoint_to_resume(resume: bool | str | os.PathLike, checkpoints: Path) -> Path | None:
    """The checkpoint ``resume`` names: none (False), the newest complete one in ``checkpoints`` (True), or a path."""
    if resume is False:
        return None
    if resume is not True:
        path = Path(resume)
        if not is_complete(path):
            raise ValueError(f"checkpoint {path} is incomplete (no {COMPLETE_NAME} marker or checksum mismatch)")
        return path
    for _, path in sorted(epoch_dirs(checkpoints).items(), reverse=True):
        if is_complete(path):
            return path
        logger.warning("skipping incomplete checkpoint %s", path)
    logger.info("no complete checkpoint in %s: starting afresh", checkpoints)
    return None
