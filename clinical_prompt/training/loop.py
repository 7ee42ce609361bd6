"""The training loop under Hugging Face ``accelerate`` (see :mod:`clinical_prompt.training`)."""
from __future__ import annotations

import logging
import math
import resource
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, set_seed, tqdm
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import get_linear_schedule_with_warmup
from transformers.trainer_pt_utils import get_length_grouped_indices

from clinical_prompt.lock import LOCK_NAME, acquire, release
from clinical_prompt.training.checkpoints import (
    LoopState,
    checkpoint_to_resume,
    drop_frozen_weights,
    is_complete,
    read_loop_state,
    save_checkpoint,
)
from clinical_prompt.training.config import TrainingConfig, TrainingResult

logger = logging.getLogger(__package__)  # clinical_prompt.training


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
    lengths: Sequence[int] | None = None,
) -> TrainingResult:
    """Train ``model`` on ``train_dataset`` (AdamW, linear warmup and decay) and return its history and figures.

    ``param_groups`` are AdamW groups (``params``, optional ``lr``, ``weight_decay``); only parameters with
    ``requires_grad`` are kept. With ``config.group_by_length``, batches take examples of similar length where the
    lengths are known: ``lengths`` (one per example), else the ``input_ids`` of mapping examples.
    ``evaluate_fn(model)`` runs on every process (so it may ``gather_for_metrics``) with the unwrapped model in eval
    mode under ``torch.no_grad()``; the main process's metrics are used everywhere.
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
    sampler = _EpochSampler(len(train_dataset), config.seed, batch_size=config.per_device_batch_size,
                            lengths=(lengths or _input_lengths(train_dataset)) if config.group_by_length else None)
    with _output_dir_lock(config.output_dir, accelerator):
        return _train(model, train_dataset, sampler, config, collate_fn, param_groups, evaluate_fn, accelerator)


def _train(
    model: nn.Module,
    train_dataset: Dataset,
    sampler: _EpochSampler,
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
        train_dataset, batch_size=config.per_device_batch_size, sampler=sampler,
        collate_fn=collate_fn, num_workers=config.dataloader_num_workers,
    ))
    steps_per_epoch = math.ceil(len(loader) / config.gradient_accumulation_steps)
    total_steps = steps_per_epoch * config.num_epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup_ratio * total_steps), total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    accelerator.register_save_state_pre_hook(drop_frozen_weights)

    state = LoopState()
    resume_from = _on_main(accelerator, lambda: checkpoint_to_resume(config.resume, checkpoints))
    if resume_from is not None:
        accelerator.load_state(str(resume_from), strict=False)
        state = read_loop_state(resume_from)
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
            save_checkpoint(accelerator, checkpoints, state, config.save_total_limit)
        if _patience_spent(state, config):
            _log(accelerator, "early stopping after epoch %d: no %s improvement for %d epochs",
                 epoch, config.metric_for_best, state.epochs_without_improvement)
    progress.close()

    if evaluate_fn is not None and config.load_best_at_end and state.best_epoch not in (None, state.epoch):
        best = checkpoints / f"epoch-{state.best_epoch}"
        if not is_complete(best):
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
    state: LoopState,
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
    """A random order that depends only on ``(seed, epoch)``: the same on every process and after a resume. Grouped
    by length, it is ``transformers``' length-grouped order (shuffled, then sorted by length within runs of up to 50
    batches of ``batch_size``), so a batch pads little; ``lengths`` is one per example, ``None`` for the plain
    order."""

    def __init__(self, num_samples: int, seed: int, *, batch_size: int = 1,
                 lengths: Sequence[int] | None = None) -> None:
        if lengths is not None and len(lengths) != num_samples:
            raise ValueError(f"{len(lengths)} lengths for {num_samples} training examples")
        self.num_samples, self.seed, self.epoch, self.batch_size = num_samples, seed, 0, batch_size
        self.lengths = None if lengths is None else list(lengths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.lengths is None:
            return iter(torch.randperm(self.num_samples, generator=generator).tolist())
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))

    def __len__(self) -> int:
        return self.num_samples


def _input_lengths(dataset: Dataset) -> list[int] | None:
    """The length of each example's ``input_ids`` where every example is a mapping holding them, else ``None``."""
    examples = [dataset[i] for i in range(len(dataset))]
    if all(isinstance(example, Mapping) and "input_ids" in example for example in examples):
        return [len(example["input_ids"]) for example in examples]
    return None


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


def _record_metric(state: LoopState, epoch: int, metrics: Mapping[str, float], name: str) -> bool:
    """Update the best metric and the patience counter; True when ``epoch`` is the new best."""
    if name not in metrics:
        raise KeyError(f"evaluate_fn returned no {name!r} (config.metric_for_best); it returned {sorted(metrics)}")
    value = metrics[name]
    if not math.isnan(value) and (state.best_metric is None or value > state.best_metric):
        state.best_metric, state.best_epoch, state.epochs_without_improvement = value, epoch, 0
        return True
    state.epochs_without_improvement += 1
    return False


def _patience_spent(state: LoopState, config: TrainingConfig) -> bool:
    patience = config.early_stopping_patience
    return patience is not None and state.epochs_without_improvement >= patience


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
