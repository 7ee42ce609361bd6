"""The library's one training loop, under Hugging Face ``accelerate``: train, evaluate, checkpoint, resume, stop early.

It knows nothing of prompts, heads or BRAT: ``model(**batch)`` must return an object or dict with a ``loss``.

Settings in :mod:`~clinical_prompt.training.config`, the loop in :mod:`~clinical_prompt.training.loop`, checkpoints
(sealed, checksummed, resumed at epoch boundaries) in :mod:`~clinical_prompt.training.checkpoints`.

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
A script of its own ends with ``accelerator.wait_for_everyone(); accelerator.end_training()``, as accelerate asks: a
process that exits with the process group alive can abort the other (gloo). The recipes do this themselves.
"""
from clinical_prompt.training.checkpoints import COMPLETE_NAME, STATE_NAME
from clinical_prompt.training.config import MIXED_PRECISION, TrainingConfig, TrainingResult
from clinical_prompt.training.loop import default_param_groups, train

__all__ = [
    "COMPLETE_NAME",
    "MIXED_PRECISION",
    "STATE_NAME",
    "TrainingConfig",
    "TrainingResult",
    "default_param_groups",
    "train",
]
