"""Deep prompts: per-layer key/value prefixes inside the self-attention of Hugging Face encoders.

While ``DeepPromptHandle.prefixes(past)`` is active, each self-attention module runs on ``P`` placeholder rows
followed by the ``T`` text rows: forward hooks replace the key and value projections of the placeholder rows by the
layer's prefixes, the attention mask gains ``P`` key columns (from ``prefix_mask``) and ``P`` query rows, and the
placeholder outputs are dropped before the residual connection. The module's own attention code (eager, SDPA,
FlashAttention) runs unchanged on ``P + T`` keys; nothing but the attention sees the placeholders. Outside the
context no hook is installed. It costs ``P`` extra query rows per layer (3% of the attention at P=16, T=496).

Positions: the prefixes sit at the ``P`` positions just before the text. Models with absolute position embeddings
give keys no position, so this only matters for relative terms: DeBERTa-v2's c2p/p2c terms and MPNet's bias are
computed over the ``P + T`` rows as for a joint run. A deep prompt thus equals running, in front of the text, the
tokens whose keys and values it holds. Text position ids are not touched (the model's defaults unless passed).

DeBERTa-v2 models with a convolution after the first layer (``conv_kernel_size``, e.g. xlarge) also mix
neighbouring tokens outside attention, which a prefix does not reach: there the first text token differs from a joint
run. Activation checkpointing (``clinical_prompt.backbone.enable_activation_checkpointing``) passes
:func:`checkpoint_contexts` to ``torch.utils.checkpoint``, so recomputation in backward runs the hooks again.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

Rebuild = Callable[[dict, Tensor], None]


def _deberta_relative_pos(backbone: nn.Module) -> Rebuild:
    def rebuild(arguments: dict, hidden: Tensor) -> None:
        if arguments.get("query_states") is not None:
            raise NotImplementedError("deep prompts do not support DeBERTa-v2 query_states (enhanced mask decoder)")
        arguments["relative_pos"] = None  # the module rebuilds it for the P + T rows

    return rebuild


def _mpnet_bias(backbone: nn.Module) -> Rebuild:
    encoder = next(module for module in backbone.modules() if hasattr(module, "compute_position_bias"))

    def rebuild(arguments: dict, hidden: Tensor) -> None:
        if arguments.get("position_bias") is not None:
            arguments["position_bias"] = encoder.compute_position_bias(hidden)

    return rebuild


@dataclass(frozen=True)
class _Architecture:
    attention: str  # class name of the self-attention module (its subclasses count, see prompts/attention.py)
    key: str
    value: str
    float_mask_is_additive: bool = True  # False: a floating mask holds 1 (attend) / 0, as DeBERTa-v2 reads it
    rebuild: Callable[[nn.Module], Rebuild] | None = None  # relative-position term to recompute for P + T rows


ARCHITECTURES = {
    "bert": _Architecture("BertSelfAttention", "key", "value"),
    "roberta": _Architecture("RobertaSelfAttention", "key", "value"),
    "megatron-bert": _Architecture("MegatronBertSelfAttention", "key", "value"),
    "mpnet": _Architecture("MPNetSelfAttention", "k", "v", rebuild=_mpnet_bias),
    "deberta-v2": _Architecture(
        "DisentangledSelfAttention", "key_proj", "value_proj", float_mask_is_additive=False,
        rebuild=_deberta_relative_pos,
    ),
}


@dataclass(frozen=True)
class AttentionSite:
    """One layer's self-attention module and its key/value projections."""

    attention: nn.Module
    key: nn.Module
    value: nn.Module


def _mask_values(allowed: Tensor, like: Tensor, additive: bool) -> Tensor:
    """``allowed`` (bool) in the encoding of ``like``: bool, additive float (0 / dtype min) or 1 / 0."""
    if like.dtype == torch.bool:
        return allowed
    if like.is_floating_point() and additive:
        return (~allowed).to(like.dtype) * torch.finfo(like.dtype).min
    return allowed.to(like.dtype)


def _extend_mask(mask: Tensor, prefix_allowed: Tensor, additive: bool) -> Tensor:
    """Add prefix key columns (and placeholder query rows, which see every key) to a 2D or 4D attention mask."""
    batch, prefix_len = prefix_allowed.shape
    if mask.dim() == 2:  # [batch, keys], as FlashAttention takes it
        return torch.cat([_mask_values(prefix_allowed, mask, additive), mask], dim=1)
    mask = mask.expand(batch, -1, -1, -1)
    _, heads, queries, keys = mask.shape
    columns = prefix_allowed[:, None, None, :].expand(batch, heads, queries, prefix_len)
    mask = torch.cat([_mask_values(columns, mask, additive), mask], dim=-1)
    if queries > 1:
        rows = prefix_allowed.new_ones(batch, heads, prefix_len, prefix_len + keys)
        mask = torch.cat([_mask_values(rows, mask, additive), mask], dim=-2)
    return mask


def _unmasked(hidden: Tensor, additive: bool, attn_implementation: str) -> Tensor:
    """An all-visible text mask, for models that pass ``None`` when nothing is padded."""
    batch, length = hidden.shape[:2]
    if "flash" in attn_implementation:
        return torch.ones(batch, length, dtype=torch.long, device=hidden.device)
    if additive:
        return hidden.new_zeros(batch, 1, 1, length)
    return torch.ones(batch, 1, 1, length, dtype=torch.bool, device=hidden.device)


class _LayerInjection:
    """Hooks that put one layer's prefixes into its self-attention for one context."""

    def __init__(
        self, handle: DeepPromptHandle, site: AttentionSite, key: Tensor, value: Tensor, prefix_mask: Tensor | None
    ) -> None:
        self.handle, self.site, self.prefix_mask = handle, site, prefix_mask
        self.key, self.value = key, value
        self.prefix_len = key.shape[1]
        self.signature = inspect.signature(site.attention.forward)
        self.placeholder_input: Tensor | None = None
        self.replaced = 0

    def install(self) -> list[torch.utils.hooks.RemovableHandle]:
        site = self.site
        return [
            site.attention.register_forward_pre_hook(self.before, with_kwargs=True),
            site.attention.register_forward_hook(self.after),
            site.key.register_forward_hook(self.projection(self.key)),
            site.value.register_forward_hook(self.projection(self.value)),
        ]

    def before(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        hidden = arguments["hidden_states"]
        if hidden.shape[0] != self.key.shape[0]:
            raise ValueError(f"deep prompts hold {self.key.shape[0]} rows but the batch has {hidden.shape[0]}")
        padded = torch.cat([hidden.new_zeros(hidden.shape[0], self.prefix_len, hidden.shape[2]), hidden], dim=1)
        arguments["hidden_states"] = padded
        arguments["attention_mask"] = self.mask(arguments["attention_mask"], hidden)
        if self.handle._rebuild is not None:
            self.handle._rebuild(arguments, padded)
        self.placeholder_input, self.replaced = padded, 0
        return bound.args, bound.kwargs

    def mask(self, mask: Tensor | None, text: Tensor) -> Tensor | None:
        """The mask for placeholders + text, from the text's mask as the module received it."""
        if mask is None and self.prefix_mask is None:
            return None
        additive = self.handle._architecture.float_mask_is_additive
        if mask is None:
            implementation = getattr(self.handle.backbone.config, "_attn_implementation", None) or "eager"
            mask = _unmasked(text, additive, implementation)
        if not isinstance(mask, Tensor):
            raise TypeError(f"deep prompts do not support attention masks of type {type(mask).__name__}")
        if self.prefix_mask is None:
            allowed = torch.ones(text.shape[0], self.prefix_len, dtype=torch.bool, device=mask.device)
        else:
            allowed = self.prefix_mask.to(mask.device, torch.bool)
        return _extend_mask(mask, allowed, additive)

    def projection(self, prefix: Tensor) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
            if args[0] is not self.placeholder_input:
                return None  # another input through the same projection (DeBERTa-v2 shared position keys)
            self.replaced += 1
            return torch.cat([prefix.to(output), output[:, self.prefix_len :]], dim=1)

        return hook

    def after(self, module: nn.Module, args: tuple, output: tuple) -> tuple:
        if self.replaced != 2:
            raise RuntimeError(f"deep prompts: {type(module).__name__} did not project its hidden states as expected")
        self.placeholder_input = None
        context, *rest = output
        # attention weights are [batch, heads, queries, keys]: drop the placeholder queries, keep the prefix keys
        rest = [item[:, :, self.prefix_len :] if isinstance(item, Tensor) else item for item in rest]
        # contiguous: a strided view would send the output projection down a matmul path chosen by whether its
        # weight requires grad, so a frozen and an unfrozen backbone would round differently
        return (context[:, self.prefix_len :].contiguous(), *rest)


def layer_prefixes(prompts: Tensor, num_layers: int) -> list[tuple[Tensor, Tensor]]:
    """Per-layer ``(key, value)`` prefixes ``[batch, P, kv_size]`` from deep prompt vectors laid out as the prompt
    tables hold them, ``[batch, P, num_layers * 2 * kv_size]`` (layer by layer, key before value)."""
    layers = prompts.unflatten(-1, (num_layers, 2, -1)).unbind(2)
    return [(layer[:, :, 0], layer[:, :, 1]) for layer in layers]


class DeepPromptHandle:
    """Deep-prompt access to one backbone; get it from :func:`attach_deep_prompts`."""

    def __init__(self, backbone: nn.Module, architecture: _Architecture, layers: list[AttentionSite]) -> None:
        self.backbone = backbone
        self.layers = layers
        self._architecture = architecture
        self._rebuild = architecture.rebuild(backbone) if architecture.rebuild else None
        self._state: tuple[Sequence[tuple[Tensor, Tensor]], Tensor | None, int] | None = None  # set while active

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @functools.cached_property
    def blocks(self) -> nn.ModuleList:
        """The encoder's layer modules, ``blocks[i]`` holding ``layers[i].attention``."""
        for module in self.backbone.modules():
            if isinstance(module, nn.ModuleList) and len(module) == self.num_layers and all(
                any(part is site.attention for part in block.modules()) for block, site in zip(module, self.layers)
            ):
                return module
        raise ValueError(f"found no list of {self.num_layers} encoder layers in {type(self.backbone).__name__}")

    @property
    def kv_size(self) -> int:
        """Width of each key or value prefix (the key/value projections' output size)."""
        return self.layers[0].attention.all_head_size

    @contextmanager
    def prefixes(
        self, past: Sequence[tuple[Tensor, Tensor]], prefix_mask: Tensor | None = None, start_layer: int = 0
    ) -> Iterator[None]:
        """Run the backbone with ``past[i] = (key, value)``, each ``[batch, prefix_len, kv_size]``, in front in layer
        ``start_layer + i`` (late prompts: the layers below ``start_layer`` get none).

        Rows may differ. ``prefix_mask`` (``[batch, prefix_len]``, 1 = attend) hides the prefix positions a row does
        not use, so prompts of different lengths share one batch: pad shorter prompts on the left (masked positions
        first), so that each ends right before the text and a row equals its unpadded run in relative-position models
        too. The backbone takes the text's own attention mask.
        """
        self._check(past, prefix_mask, start_layer)
        if self._state is not None:
            raise RuntimeError("deep prompts are already active on this backbone")
        hooks = []
        try:
            for site, (key, value) in zip(self.layers[start_layer:], past):
                hooks += _LayerInjection(self, site, key, value, prefix_mask).install()
            self._state = (past, prefix_mask, start_layer)
            yield
        finally:
            for hook in hooks:
                hook.remove()
            self._state = None

    def checkpoint_contexts(self) -> tuple[AbstractContextManager, AbstractContextManager]:
        """``context_fn`` of a non-reentrant ``torch.utils.checkpoint``: the recomputation in backward runs with the
        prefixes active in forward, also when backward runs after the :meth:`prefixes` context has closed."""
        if self._state is None:
            return nullcontext(), nullcontext()
        return nullcontext(), self._recomputing(self._state)

    @contextmanager
    def _recomputing(self, state: tuple[Sequence[tuple[Tensor, Tensor]], Tensor | None, int]) -> Iterator[None]:
        if self._state is state:  # backward inside the forward's context: the hooks are still there
            yield
        else:
            with self.prefixes(*state):
                yield

    def _check(self, past: Sequence[tuple[Tensor, Tensor]], prefix_mask: Tensor | None, start_layer: int) -> None:
        if not 0 <= start_layer < self.num_layers:
            raise ValueError(f"start_layer must be in [0, {self.num_layers}), got {start_layer}")
        if len(past) != self.num_layers - start_layer:
            raise ValueError(
                f"deep prompts from layer {start_layer} need {self.num_layers - start_layer} (key, value) pairs, "
                f"got {len(past)}"
            )
        shape = past[0][0].shape
        if len(shape) != 3 or shape[2] != self.kv_size:
            raise ValueError(f"deep prompt prefixes must be [batch, prefix_len, {self.kv_size}], got {list(shape)}")
        for layer, pair in enumerate(past, start=start_layer):
            if any(tensor.shape != shape for tensor in pair):
                raise ValueError(f"deep prompt layer {layer}: key and value must both be {list(shape)}")
        if prefix_mask is not None and prefix_mask.shape != shape[:2]:
            raise ValueError(f"prefix_mask must be {list(shape[:2])}, got {list(prefix_mask.shape)}")


def checkpoint_contexts(model: nn.Module) -> tuple[AbstractContextManager, AbstractContextManager]:
    """``context_fn`` for activation checkpointing of ``model``: see :meth:`DeepPromptHandle.checkpoint_contexts`;
    two empty contexts while no deep prompts are attached to ``model`` (or its base model) or active."""
    handle = model.__dict__.get("_deep_prompt_handle") or getattr(model, "base_model", model).__dict__.get(
        "_deep_prompt_handle"
    )
    return handle.checkpoint_contexts() if handle is not None else (nullcontext(), nullcontext())


def attach_deep_prompts(backbone: nn.Module) -> DeepPromptHandle:
    """Find the self-attention layers of a Hugging Face encoder (or a model holding one) for deep prompts.

    Idempotent: the handle is kept on the backbone. Raises ``ValueError`` for architectures not in ``ARCHITECTURES``.
    """
    handle = backbone.__dict__.get("_deep_prompt_handle")
    if handle is not None:
        return handle
    model_type = backbone.config.model_type
    architecture = ARCHITECTURES.get(model_type)
    if architecture is None:
        raise ValueError(
            f"deep prompts do not support the {model_type!r} architecture ({type(backbone).__name__}); "
            f"supported: {', '.join(sorted(ARCHITECTURES))}"
        )
    layers = [
        AttentionSite(module, getattr(module, architecture.key), getattr(module, architecture.value))
        for module in backbone.modules()
        if any(cls.__name__ == architecture.attention for cls in type(module).__mro__)  # or its SDPA subclass
    ]
    if len(layers) != backbone.config.num_hidden_layers:
        raise ValueError(
            f"found {len(layers)} {architecture.attention} modules in {type(backbone).__name__}, "
            f"expected {backbone.config.num_hidden_layers}"
        )
    handle = DeepPromptHandle(backbone, architecture, layers)
    backbone.__dict__["_deep_prompt_handle"] = handle
    return handle
