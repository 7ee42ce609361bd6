"""Settings of one training run (:class:`TrainingConfig`) and what the run returns (:class:`TrainingResult`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIXED_PRECISION = ("no", "fp16", "bf16", "auto")


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
    group_by_length: bool = field(
        default=False, metadata={"help": "Batches of examples of similar length (shuffled, then sorted within runs of "
                                         "50 batches, as transformers' group_by_length): far less padding."}
    )
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
