"""The library's one training loop, under Hugging Face ``accelerate``: train, evaluate, checkpoint, resume, stop early.

It knows nothing of prompts, heads or BRAT: ``model(**batch)`` must return an object or dict with a ``loss``.

Checkpoints: ``output_dir/checkpoints/epoch-{n}`` at the end of an epoch, written by ``Accelerator.save_state`` into
``epoch-{n}.partial``, synced to disk (files, then directories) and renamed into place once complete; a ``COMPLETE``
file holds the SHA-256 of every other file and is checked before a checkpoint is used, so a run killed at any point
(mid-write too, or by a power loss) never resumes from half a checkpoint. Frozen parameters never change, so
checkpoints hold only trainable parameters and buffers (plus optimizer, scheduler, RNG states and
``training_state.json``); resuming needs the same model, built the same way. Resuming works at epoch boundaries: a
run killed mid-epoch restarts that epoch from the last complete checkpoint, and with the same config and seed it ends
with the same weights as an uninterrupted run (bit for bit on CPU), because the data order of an epoch depends only on
``(seed, epoch)`` and RNG states are restored.

Log lines (logger ``clinical_prompt.training``, main process only) never show batch contents:
``training: {n} examples, {n} epochs, {n} optimizer steps, {n} processes``; ``resuming from {path} ...``;
``skipping incomplete checkpoint {path}``; ``no complete checkpoint in {path} ...``;
``epoch {e} step {s} loss {x} lr {x,...}``;
``epoch {e} done: train_loss {x}, metrics {name=x, ...}, {x} s``; ``saved checkpoint {path}``;
``early stopping after epoch {e} ...``; ``restored the best model ...``; ``done: ...``.

Lock: for the whole run the main process holds the OS lock on ``output_dir/.lock`` (:mod:`clinical_prompt.lock`), a
file naming its pid and host; a second run on the same directory is refused with ``OutputDirInUseError``. The OS
drops the lock when its process dies, however it dies (SIGKILL too), so the lock file a killed run leaves is taken
over, with a warning.

Several processes (``accelerate launch --multi_gpu --num_processes N``): every process trains its shard, only the
main process logs and seals checkpoints, all of them write their RNG states into a checkpoint directory on a shared
file system. Without GPUs, accelerate runs such a launch as MULTI_CPU (gloo) only with ``ACCELERATE_USE_CPU=1`` (or
``Accelerator(cpu=True)``); otherwise each process believes it runs alone and the output-dir lock refuses the second.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, set_seed, tqdm
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import get_linear_schedule_with_warmup

from clinical_prompt.atomic import sync_path
from clinical_prompt.lock import LOCK_NAME, acquire, release

logger = logging.getLogger(__name__)

MIXED_PRECISION = ("no", "fp16", "bf16", "auto")
COMPLETE_NAME = "COMPLETE"
STATE_NAME = "training_state.json"
_EPOCH_DIR = re.compile(r"epoch-(\d+)")


@dataclass
class TrainingConfig:
    """Settings of one training run (the model's own settings, e.g. its attention implementation, live on it)."""

    output_dir: Path = field(metadata={"help": "Run directory: lock file and checkpoints/epoch-{n}."})
    num_epochs: int = field(default=3, metadata={"help": "Number of passes over the training set."})
    per_device_batch_size: int = field(default=4, metadata={"help": "Examples per batch on each process."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak rate of parameter groups without their own."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW decay of groups without their own."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Share of optimizer steps with linear warmup."})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "Gradient clipping norm; None = off."})
    mixed_precision: str = field(
        default="auto", metadata={"help": "no, fp16, bf16 or auto (bf16 on GPUs that have it, fp16 on older GPUs, "
                                          "no on CPU)."}
    )
    activation_checkpointing: bool = field(
        default=False, metadata={"help": "Keep only each layer's input and recompute the layer in backward (Hugging "
                                         "Face models inside the model): far less memory, one more forward pass."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of every RNG and of the data order."})
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluated epochs without improvement; None = off."}
    )
    metric_for_best: str = field(default="strict_f1", metadata={"help": "Metric from evaluate_fn; higher is better."})
    load_best_at_end: bool = field(default=True, metadata={"help": "Restore the best epoch's weights at the end."})
    eval_every_epoch: bool = field(default=True, metadata={"help": "Evaluate after every epoch, else after the last."})
    save_every_epoch: bool = field(
        default=True, metadata={"help": "Checkpoint every epoch, else only epochs that improve the best metric."}
    )
    save_total_limit: int = field(default=2, metadata={"help": "Newest checkpoints kept, plus the best one."})
    resume: bool | str | Path = field(
        default=False, metadata={"help": "True: newest complete checkpoint in output_dir (if any); or a path."}
    )
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    log_every_steps: int = field(default=50, metadata={"help": "Log the loss every this many optimizer steps."})

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        for name in ("num_epochs", "per_device_batch_size", "gradient_accumulation_steps", "save_total_limit",
                     "log_every_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")
        if self.mixed_precision not in MIXED_PRECISION:
            allowed = ", ".join(MIXED_PRECISION)
            raise ValueError(f"mixed_precision must be one of {allowed}; got {self.mixed_precision!r}")
        if self.early_stopping_patience is not None:
            if self.early_stopping_patience < 1:
                raise ValueError(f"early_stopping_patience must be >= 1 or None, got {self.early_stopping_patience}")
            if not self.eval_every_epoch:
                raise ValueError("early_stopping_patience needs eval_every_epoch=True")
        if self.dataloader_num_workers < 0:
            raise ValueError(f"dataloader_num_workers must be >= 0, got {self.dataloader_num_workers}")
        if not isinstance(self.resume, (bool, str, os.PathLike)):
            raise ValueError(f"resume must be True, False or a checkpoint path, got {self.resume!r}")


@dataclass
class TrainingResult:
    """What :func:`train` returns. ``history`` holds one dict per epoch: epoch, train_loss, metrics, seconds."""

    history: list[dict[str, Any]]
    best_metric: float | None
    best_epoch: int | None
    stopped_early: bool
    train_seconds: float
    peak_memory_bytes: int
    tokens_per_second: float | None


@dataclass
class _LoopState:
    """The loop's part of a checkpoint (``training_state.json``)."""

    epoch: int = 0
    global_step: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def default_param_groups(model: nn.Module, *, learning_rate: float, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two AdamW groups: with weight decay, and without (biases and normalization layers)."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        is_norm = isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "Norm" in type(module).__name__
        for name, param in module.named_parameters(recurse=False):
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                (no_decay if is_norm or name == "bias" else decay).append(param)
    return [
        {"params": decay, "lr": learning_rate, "weight_decay": weight_decay},
        {"params": no_decay, "lr": learning_rate, "weight_decay": 0.0},
    ]


def train(
    model: nn.Module,
    train_dataset: Dataset,
    *,
    config: TrainingConfig,
    collate_fn: Callable[[list[Any]], Mapping[str, Any]],
    param_groups: list[dict[str, Any]] | None = None,
    evaluate_fn: Callable[[nn.Module], Mapping[str, float]] | None = None,
    accelerator: Accelerator | None = None,
) -> TrainingResult:
    """Train ``model`` on ``train_dataset`` (AdamW, linear warmup and decay) and return its history and figures.

    ``param_groups`` are AdamW groups (``params``, optional ``lr``, ``weight_decay``); only parameters with
    ``requires_grad`` are kept. ``evaluate_fn(model)`` runs on every process (so it may ``gather_for_metrics``) with
    the unwrapped model in eval mode under ``torch.no_grad()``; the main process's metrics are used everywhere.
    A given ``accelerator`` keeps its own mixed precision; ``config.gradient_accumulation_steps`` is applied to it.
    Seed the model's construction yourself: this function seeds what happens from its start on.
    """
    if accelerator is None:
        # A batch may hold one kind of row only (concept or relation), leaving a head without gradients.
        accelerator = Accelerator(
            mixed_precision=_resolve_mixed_precision(config.mixed_precision),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
    accelerator.gradient_accumulation_steps = config.gradient_accumulation_steps
    set_seed(config.seed)
    if config.activation_checkpointing:
        _enable_activation_checkpointing(model)
    with _output_dir_lock(config.output_dir, accelerator):
        return _train(model, train_dataset, config, collate_fn, param_groups, evaluate_fn, accelerator)


def _train(
    model: nn.Module,
    train_dataset: Dataset,
    config: TrainingConfig,
    collate_fn: Callable[[list[Any]], Mapping[str, Any]],
    param_groups: list[dict[str, Any]] | None,
    evaluate_fn: Callable[[nn.Module], Mapping[str, float]] | None,
    accelerator: Accelerator,
) -> TrainingResult:
    checkpoints = config.output_dir / "checkpoints"
    groups = param_groups or default_param_groups(
        model, learning_rate=config.learning_rate, weight_decay=config.weight_decay
    )
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("no parameter to train: every parameter given has requires_grad=False")
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    loader = accelerator.prepare(DataLoader(
        train_dataset, batch_size=config.per_device_batch_size, sampler=_EpochSampler(len(train_dataset), config.seed),
        collate_fn=collate_fn, num_workers=config.dataloader_num_workers,
    ))
    steps_per_epoch = math.ceil(len(loader) / config.gradient_accumulation_steps)
    total_steps = steps_per_epoch * config.num_epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup_ratio * total_steps), total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    accelerator.register_save_state_pre_hook(_drop_frozen_weights)

    state = _LoopState()
    resume_from = _on_main(accelerator, lambda: _checkpoint_to_resume(config, checkpoints))
    if resume_from is not None:
        accelerator.load_state(str(resume_from), strict=False)
        state = _LoopState(**json.loads((resume_from / STATE_NAME).read_text()))
        _log(accelerator, "resuming from %s (epoch %d, step %d)", resume_from, state.epoch, state.global_step)
    _log(accelerator, "training: %d examples, %d epochs, %d optimizer steps, %d processes",
         len(train_dataset), config.num_epochs, total_steps, accelerator.num_processes)

    if accelerator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(accelerator.device)
    started, loop_seconds, tokens = time.perf_counter(), 0.0, 0
    progress = tqdm(total=total_steps, initial=state.global_step, main_process_only=True)
    while state.epoch < config.num_epochs and not _patience_spent(state, config):
        epoch, epoch_started = state.epoch + 1, time.perf_counter()
        progress.set_description(f"epoch {epoch}/{config.num_epochs}")
        train_loss, epoch_tokens = _train_epoch(
            accelerator, model, loader, optimizer, scheduler, config, state, epoch, progress
        )
        loop_seconds, tokens = loop_seconds + time.perf_counter() - epoch_started, tokens + epoch_tokens

        metrics: dict[str, float] = {}
        if evaluate_fn is not None and (config.eval_every_epoch or epoch == config.num_epochs):
            metrics = _evaluate(evaluate_fn, model, accelerator)
        improved = bool(metrics) and _record_metric(state, epoch, metrics, config.metric_for_best)
        seconds = time.perf_counter() - epoch_started
        state.epoch = epoch
        state.history.append({"epoch": epoch, "train_loss": train_loss, "metrics": metrics, "seconds": seconds})
        _log(accelerator, "epoch %d done: train_loss %.4f, metrics %s, %.1f s", epoch, train_loss,
             ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()) or "-", seconds)
        if config.save_every_epoch or (improved and config.load_best_at_end):
            _save_checkpoint(accelerator, checkpoints, state, config.save_total_limit)
        if _patience_spent(state, config):
            _log(accelerator, "early stopping after epoch %d: no %s improvement for %d epochs",
                 epoch, config.metric_for_best, state.epochs_without_improvement)
    progress.close()

    if evaluate_fn is not None and config.load_best_at_end and state.best_epoch not in (None, state.epoch):
        best = checkpoints / f"epoch-{state.best_epoch}"
        if not _is_complete(best):
            raise RuntimeError(f"best checkpoint {best} is missing or incomplete; cannot restore the best model")
        accelerator.load_state(str(best), strict=False)
        _log(accelerator, "restored the best model (epoch %d, %s %.4f)",
             state.best_epoch, config.metric_for_best, state.best_metric)
    total_tokens = accelerator.reduce(torch.tensor(tokens, device=accelerator.device), reduction="sum").item()
    result = TrainingResult(
        history=state.history,
        best_metric=state.best_metric,
        best_epoch=state.best_epoch,
        stopped_early=state.epoch < config.num_epochs,
        train_seconds=time.perf_counter() - started,
        peak_memory_bytes=_peak_memory_bytes(accelerator.device),
        tokens_per_second=total_tokens / loop_seconds if total_tokens and loop_seconds else None,
    )
    _log(accelerator, "done: %d epochs, best epoch %s, %.1f s, peak memory %d bytes, tokens/s %s",
         state.epoch, result.best_epoch, result.train_seconds, result.peak_memory_bytes,
         f"{result.tokens_per_second:.1f}" if result.tokens_per_second else "-")
    return result


def _train_epoch(
    accelerator: Accelerator,
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: TrainingConfig,
    state: _LoopState,
    epoch: int,
    progress: Any,
) -> tuple[float, int]:
    """One pass over the data; returns the mean loss over all processes and this process's attended tokens."""
    model.train()
    loader.set_epoch(epoch)
    epoch_loss = logged_loss = torch.zeros((), device=accelerator.device)
    logged_batches, tokens = 0, torch.zeros((), dtype=torch.int64, device=accelerator.device)
    for batch in loader:
        with accelerator.accumulate(model):
            loss = _loss_of(model(**batch))
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.max_grad_norm is not None:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                scheduler.step()
            optimizer.zero_grad()
        epoch_loss, logged_loss = epoch_loss + loss.detach(), logged_loss + loss.detach()
        logged_batches += 1
        if isinstance(batch, Mapping) and "attention_mask" in batch:
            tokens += batch["attention_mask"].sum()
        if accelerator.sync_gradients:
            state.global_step += 1
            progress.update(1)
            if state.global_step % config.log_every_steps == 0:
                mean_loss = (logged_loss / logged_batches).item()
                progress.set_postfix(loss=f"{mean_loss:.4f}")
                _log(accelerator, "epoch %d step %d loss %.4f lr %s", epoch, state.global_step, mean_loss,
                     ",".join(f"{lr:.3g}" for lr in scheduler.get_last_lr()))
                logged_loss, logged_batches = torch.zeros_like(logged_loss), 0
    mean = accelerator.reduce(epoch_loss / max(len(loader), 1), reduction="mean")
    return mean.item(), int(tokens)


class _EpochSampler(Sampler[int]):
    """A random order that depends only on ``(seed, epoch)``: the same on every process and after a resume."""

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


def _loss_of(outputs: Any) -> torch.Tensor:
    loss = outputs["loss"] if isinstance(outputs, Mapping) else getattr(outputs, "loss", None)
    if loss is None:
        raise ValueError("the model returned no loss: its batches must carry the labels")
    return loss


def _evaluate(
    evaluate_fn: Callable[[nn.Module], Mapping[str, float]], model: nn.Module, accelerator: Accelerator
) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        metrics = {name: float(value) for name, value in evaluate_fn(accelerator.unwrap_model(model)).items()}
    model.train()
    return broadcast_object_list([metrics])[0]


def _record_metric(state: _LoopState, epoch: int, metrics: Mapping[str, float], name: str) -> bool:
    """Update the best metric and the patience counter; True when ``epoch`` is the new best."""
    if name not in metrics:
        raise KeyError(f"evaluate_fn returned no {name!r} (config.metric_for_best); it returned {sorted(metrics)}")
    value = metrics[name]
    if not math.isnan(value) and (state.best_metric is None or value > state.best_metric):
        state.best_metric, state.best_epoch, state.epochs_without_improvement = value, epoch, 0
        return True
    state.epochs_without_improvement += 1
    return False


def _patience_spent(state: _LoopState, config: TrainingConfig) -> bool:
    patience = config.early_stopping_patience
    return patience is not None and state.epochs_without_improvement >= patience


def _drop_frozen_weights(models: list[nn.Module], weights: list[dict[str, torch.Tensor]], output_dir: str) -> None:
    """``save_state`` hook: frozen parameters never change, so they are left out of checkpoints."""
    for model, state_dict in zip(models, weights):
        for name, param in model.named_parameters():
            if not param.requires_grad:
                state_dict.pop(name, None)


def _save_checkpoint(accelerator: Accelerator, checkpoints: Path, state: _LoopState, keep_last: int) -> None:
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
        _log(accelerator, "saved checkpoint %s", final)
        _remove_old_checkpoints(checkpoints, state, keep_last)
    accelerator.wait_for_everyone()


def _remove_old_checkpoints(checkpoints: Path, state: _LoopState, keep_last: int) -> None:
    """Keep the newest ``keep_last`` checkpoints up to this epoch, and the best; later ones are from an older run."""
    dirs = _epoch_dirs(checkpoints)
    keep = set(sorted(e for e in dirs if e <= state.epoch)[-keep_last:]) | {state.best_epoch}
    for epoch, path in dirs.items():
        if epoch not in keep:
            shutil.rmtree(path)
    for leftover in checkpoints.glob("*.partial"):
        shutil.rmtree(leftover)


def _epoch_dirs(checkpoints: Path) -> dict[int, Path]:
    if not checkpoints.is_dir():
        return {}
    return {int(m.group(1)): p for p in checkpoints.iterdir() if (m := _EPOCH_DIR.fullmatch(p.name)) and p.is_dir()}


def _sync_tree(directory: Path) -> None:
    """Flush every file under ``directory`` to disk, then every directory's entries."""
    paths = sorted(directory.rglob("*"))
    for path in [p for p in paths if p.is_file()] + [p for p in paths if p.is_dir()] + [directory]:
        sync_path(path)


def _checksum(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != COMPLETE_NAME):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _is_complete(checkpoint: Path) -> bool:
    marker = checkpoint / COMPLETE_NAME
    return marker.is_file() and marker.read_text().strip() == _checksum(checkpoint)


def _checkpoint_to_resume(config: TrainingConfig, checkpoints: Path) -> Path | None:
    if config.resume is False:
        return None
    if config.resume is not True:
        path = Path(config.resume)
        if not _is_complete(path):
            raise ValueError(f"checkpoint {path} is incomplete (no {COMPLETE_NAME} marker or checksum mismatch)")
        return path
    for _, path in sorted(_epoch_dirs(checkpoints).items(), reverse=True):
        if _is_complete(path):
            return path
        logger.warning("skipping incomplete checkpoint %s", path)
    logger.info("no complete checkpoint in %s: starting afresh", checkpoints)
    return None


@contextmanager
def _output_dir_lock(output_dir: Path, accelerator: Accelerator) -> Iterator[None]:
    """Hold the lock on ``output_dir/.lock`` for the run (main process); refuse a directory another run holds."""
    held = []  # the main process's lock; the others only learn whether it was taken
    _on_main(accelerator, lambda: held.append(acquire(output_dir / LOCK_NAME)))
    try:
        yield
    finally:
        for lock in held:
            release(lock)


def _on_main(accelerator: Accelerator, fn: Callable[[], Any]) -> Any:
    """``fn()`` on the main process; its result, or its exception, on every process."""
    outcome: tuple[Any, BaseException | None] = (None, None)
    if accelerator.is_main_process:
        try:
            outcome = (fn(), None)
        except Exception as error:  # re-raised below, on every process
            outcome = (None, error)
    [outcome] = broadcast_object_list([outcome])
    if outcome[1] is not None:
        raise outcome[1]
    return outcome[0]


def _enable_activation_checkpointing(model: nn.Module) -> None:
    """Activation checkpointing on each outermost Hugging Face model inside ``model``."""
    from transformers import PreTrainedModel

    from clinical_prompt.backbone import enable_activation_checkpointing

    models = [module for module in model.modules() if isinstance(module, PreTrainedModel)]
    if not models:
        raise ValueError("activation_checkpointing: the model holds no Hugging Face model to checkpoint")
    inner = {id(sub) for module in models for sub in module.modules() if sub is not module}
    for module in models:
        if id(module) not in inner:  # enabling a model covers the models inside it
            enable_activation_checkpointing(module)


def _resolve_mixed_precision(value: str) -> str:
    if value != "auto":
        return value
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def _peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _log(accelerator: Accelerator, message: str, *args: Any) -> None:
    if accelerator.is_main_process:
        logger.info(message, *args)
