"""Late prompts on a shared trunk: the layers below the prompts' start layer run once per distinct row.

With deep prompts from layer ``k`` (``ClinicalPromptConfig.prompt_start_layer``) layers ``0..k-1`` see only the text,
so rows holding the same text (a window asked every concept question, a head asked every relation type, a window
under several institutions' adapters) have equal states up to layer ``k``. :func:`encode_late` runs the backbone on
the distinct rows and stops it at layer ``k``, gathers those states to every row, then runs the backbone on all rows
with layers ``0..k-1`` skipped (they hand on the gathered states) and the prefixes in layers ``k..L-1``. The model's
own forward builds masks and position terms both times, so each row equals its run alone; gradients reach the trunk
through the gather (the rows of one window sum into it). In training, the rows of one window share the trunk's
dropout masks.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from clinical_prompt.prompts.deep import DeepPromptHandle


class _TrunkDone(Exception):
    """Stops the trunk pass at the first prompted layer."""


def encode_late(
    handle: DeepPromptHandle,
    inputs: dict[str, Tensor],
    past: Sequence[tuple[Tensor, Tensor]],
    *,
    start_layer: int = 0,
    prefix_mask: Tensor | None = None,
) -> Tensor:
    """Last hidden states ``[B, T, H]`` of ``inputs`` (``input_ids``, ``attention_mask``, optional
    ``token_type_ids``) with the prefixes ``past`` in layers ``start_layer..L-1`` (see
    :meth:`DeepPromptHandle.prefixes`); the layers below run once per distinct row."""
    backbone = handle.backbone
    distinct, inverse = _distinct_rows(inputs)
    if start_layer == 0 or len(distinct["input_ids"]) == len(inverse):
        with handle.prefixes(past, prefix_mask, start_layer):
            return backbone(**inputs).last_hidden_state
    if getattr(backbone.config, "conv_kernel_size", 0):
        raise ValueError("late prompts cannot share the trunk of a DeBERTa-v2 model with a convolution layer")
    states, packed = _trunk(handle, distinct, start_layer)
    with _skipping(handle.blocks[:start_layer], packed(states.index_select(0, inverse))):
        with handle.prefixes(past, prefix_mask, start_layer):
            return backbone(**inputs).last_hidden_state


def _distinct_rows(inputs: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
    """The first of each group of equal rows, and for every row the index of its group's first row there."""
    keys = torch.cat([inputs[name].long() for name in sorted(inputs)], dim=1)
    _, inverse = torch.unique(keys, dim=0, return_inverse=True)
    positions = torch.arange(len(keys), device=keys.device)
    first = torch.full((int(inverse.max()) + 1,), len(keys), device=keys.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    return {name: tensor[first] for name, tensor in inputs.items()}, inverse


def _trunk(handle: DeepPromptHandle, inputs: dict[str, Tensor], start_layer: int) -> tuple[Tensor, Any]:
    """The hidden states entering layer ``start_layer``, and a function that packs states as the layers return
    them (a tensor or a tuple led by it)."""
    captured: dict[str, Any] = {}

    def keep_form(module: nn.Module, args: tuple, output: Any) -> None:
        captured["form"] = output

    def stop(module: nn.Module, args: tuple, kwargs: dict) -> None:
        captured["states"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        raise _TrunkDone

    upper = {id(p) for block in handle.blocks[start_layer:] for p in block.parameters()}
    trains = any(p.requires_grad for p in handle.backbone.parameters() if id(p) not in upper)
    hooks = [handle.blocks[0].register_forward_hook(keep_form),
             handle.blocks[start_layer].register_forward_pre_hook(stop, with_kwargs=True)]
    try:
        with torch.set_grad_enabled(torch.is_grad_enabled() and trains):
            handle.backbone(**inputs)
    except _TrunkDone:
        pass
    finally:
        for hook in hooks:
            hook.remove()
    form = captured["form"]
    if isinstance(form, Tensor):
        return captured["states"], lambda states: states
    if isinstance(form, tuple):
        return captured["states"], lambda states: (states, *[None] * (len(form) - 1))
    raise TypeError(f"late prompts: encoder layers return {type(form).__name__}, not a tensor or tuple")


@contextmanager
def _skipping(blocks: Sequence[nn.Module], output: Any) -> Iterator[None]:
    """Layers ``blocks`` return ``output`` without computing (an instance ``forward`` set, then restored)."""
    saved = [block.__dict__.get("forward") for block in blocks]
    for block in blocks:
        block.forward = lambda *args, **kwargs: output
    try:
        yield
    finally:
        for block, forward in zip(blocks, saved):
            if forward is None:
                del block.forward
            else:
                block.forward = forward
