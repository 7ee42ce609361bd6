"""Parameter counts and adapter sizes, for a live model or from a base model's config alone."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from transformers import AutoModel

from clinical_prompt.prompts.config import ClinicalPromptConfig
from clinical_prompt.prompts.encoder import PromptTables
from clinical_prompt.prompts.model import PromptedEncoder


def _count(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _report(trainable: int, total: int, adapter_bytes: int) -> dict[str, Any]:
    return {
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_share": trainable / total,
        "adapter_bytes": adapter_bytes,
    }


def parameter_report(model: PromptedEncoder) -> dict[str, Any]:
    """Trainable and total parameters, the trainable share, and the tensor bytes ``save_pretrained`` writes.

    ``adapter_bytes`` counts the materialized prompt tables and head tensors; the safetensors header adds
    well under a kilobyte.
    """
    adapter_bytes = sum(t.numel() * t.element_size() for t in model.adapter_tensors().values())
    return _report(_count(model, trainable_only=True), _count(model), adapter_bytes)


def adapter_size_for(
    config_of_base: Any,
    prompt_config: ClinicalPromptConfig,
    *,
    head_parameters: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """:func:`parameter_report` for a frozen base of this transformers config, computed without its weights.

    The base and the prompt tables are built on the meta device. Trainable parameters are the prompt
    parameters during training (reparameterization included) plus ``head_parameters``; the adapter holds the
    materialized tables plus the heads, in ``dtype``.
    """
    config = copy.deepcopy(prompt_config)
    config.bind_base(config_of_base)
    with torch.device("meta"):
        base = _count(AutoModel.from_config(config_of_base))
        trainable = _count(PromptTables(config)) + head_parameters
    stored = config.num_blocks * config.num_virtual_tokens * config.table_width + head_parameters
    itemsize = torch.empty((), dtype=dtype).element_size()
    return _report(trainable, base + trainable, stored * itemsize)


def format_size_table(config_of_base: Any, prompt_blocks: list[str], num_virtual_tokens: int) -> str:
    """A table of :func:`adapter_size_for` over every prompt shape (depth x reparameterization)."""
    lines = [
        f"{'depth':<6} {'reparam':<8} {'trainable':>12} {'total':>14} {'share':>7} {'adapter MiB':>12}",
    ]
    for depth in ("input", "deep"):
        for reparameterization in ("none", "mlp", "lstm"):
            prompt_config = ClinicalPromptConfig(
                prompt_blocks=prompt_blocks,
                num_virtual_tokens=num_virtual_tokens,
                depth=depth,
                reparameterization=reparameterization,
            )
            size = adapter_size_for(config_of_base, prompt_config)
            lines.append(
                f"{depth:<6} {reparameterization:<8} {size['trainable_parameters']:>12,}"
                f" {size['total_parameters']:>14,} {size['trainable_share']:>7.2%}"
                f" {size['adapter_bytes'] / 2**20:>12.2f}"
            )
    return "\n".join(lines)
