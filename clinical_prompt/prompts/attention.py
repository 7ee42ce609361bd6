"""SDPA self-attention for the encoders whose transformers classes run eager attention only.

transformers (5.x) gives BERT, RoBERTa and most encoders an SDPA path (``attn_implementation="sdpa"``), but not
Megatron-BERT (GatorTron), MPNet or DeBERTa-v2: their self-attention multiplies queries and keys, adds the mask and
takes a softmax, keeping ``[batch, heads, length, length]`` scores and probabilities for backward.
:func:`use_sdpa_attention` switches their self-attention modules, in place, to subclasses that compute the same
attention with ``torch.nn.functional.scaled_dot_product_attention``, which picks a fused kernel (FlashAttention
without a mask, memory-efficient attention with one, on GPUs). The weights, their names and the key/value projection
calls stay as they are, so deep prompts (:mod:`clinical_prompt.prompts.deep`) and quantized projections work
unchanged. MPNet's relative position bias and DeBERTa-v2's disentangled (c2p, p2c) terms enter as a float mask.

As with transformers' own SDPA models, ``output_attentions=True`` returns no attention weights (a warning says so);
load the model with ``attn_implementation="eager"`` for them.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers.models.deberta_v2.modeling_deberta_v2 import DisentangledSelfAttention
from transformers.models.megatron_bert.modeling_megatron_bert import MegatronBertSelfAttention
from transformers.models.mpnet.modeling_mpnet import MPNetSelfAttention


def _additive(values: Tensor, dtype: torch.dtype) -> Tensor:
    """An additive float mask or bias in ``dtype``; a float32 minimum that rounds to -inf stays finite (no NaN rows)."""
    return values.to(dtype).clamp(min=torch.finfo(dtype).min)


def _with_bias(mask: Tensor | None, bias: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """One SDPA ``attn_mask`` from a mask (bool: True attends; float: additive) and an additive score bias."""
    if bias is None:
        return mask if mask is None or mask.dtype == torch.bool else _additive(mask, dtype)
    if mask is None:
        return _additive(bias, dtype)
    if mask.dtype == torch.bool:
        return _additive(bias, dtype).masked_fill(~mask, torch.finfo(dtype).min)
    return _additive(bias + mask, dtype)


def _attend(
    module: nn.Module, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, output_attentions: bool,
    scale: float | None = None,
) -> Tensor:
    """``[batch, heads, queries, head_size]`` inputs -> context ``[batch, queries, heads * head_size]``."""
    if output_attentions:
        warnings.warn("SDPA attention returns no attention weights; load the model with attn_implementation='eager'",
                      stacklevel=2)
    dropout = module.dropout.p if module.training else 0.0
    context = F.scaled_dot_product_attention(
        query, key, value, attn_mask=_with_bias(mask, None, query.dtype), dropout_p=dropout, scale=scale
    )
    return context.transpose(1, 2).flatten(2)


def _heads(projected: Tensor, head_size: int) -> Tensor:
    """``[batch, length, heads * head_size]`` -> ``[batch, heads, length, head_size]``."""
    return projected.unflatten(-1, (-1, head_size)).transpose(1, 2)


class MegatronBertSdpaSelfAttention(MegatronBertSelfAttention):
    """Megatron-BERT self-attention through SDPA (encoder use: no cross-attention, no cache)."""

    def forward(
        self, hidden_states: Tensor, attention_mask: Tensor | None = None, output_attentions: bool = False, **kwargs
    ) -> tuple[Tensor, None]:
        query, key, value = (
            _heads(projection(hidden_states), self.attention_head_size)
            for projection in (self.query, self.key, self.value)
        )
        return _attend(self, query, key, value, attention_mask, output_attentions), None


class MPNetSdpaSelfAttention(MPNetSelfAttention):
    """MPNet self-attention through SDPA; the relative position bias joins the mask."""

    def forward(
        self,
        hidden_states: Tensor,
        attention_mask: Tensor | None = None,
        position_bias: Tensor | None = None,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[Tensor, ...]:
        query, key, value = (
            _heads(projection(hidden_states), self.attention_head_size) for projection in (self.q, self.k, self.v)
        )
        mask = _with_bias(attention_mask, position_bias, query.dtype)
        output = self.o(_attend(self, query, key, value, mask, output_attentions))
        return (output, None) if output_attentions else (output,)


class DebertaV2SdpaSelfAttention(DisentangledSelfAttention):
    """DeBERTa-v2 disentangled self-attention through SDPA; the c2p / p2c terms join the mask."""

    def forward(
        self,
        hidden_states: Tensor,
        attention_mask: Tensor,
        output_attentions: bool = False,
        query_states: Tensor | None = None,
        relative_pos: Tensor | None = None,
        rel_embeddings: Tensor | None = None,
    ) -> tuple[Tensor, None]:
        heads = self.num_attention_heads
        queries_from = hidden_states if query_states is None else query_states
        query = self.transpose_for_scores(self.query_proj(queries_from), heads)
        key = self.transpose_for_scores(self.key_proj(hidden_states), heads)
        value = self.transpose_for_scores(self.value_proj(hidden_states), heads)
        scale_factor = 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type)
        bias = None
        if self.relative_attention and self.pos_att_type:  # with no c2p / p2c term the bias is 0
            bias = self.disentangled_attention_bias(
                query, key, relative_pos, self.pos_dropout(rel_embeddings), scale_factor
            ).unflatten(0, (-1, heads))
        mask = _with_bias(attention_mask.bool(), bias, query.dtype)
        query, key, value = (tensor.unflatten(0, (-1, heads)) for tensor in (query, key, value))
        scale = (query.shape[-1] * scale_factor) ** -0.5
        return _attend(self, query, key, value, mask, output_attentions, scale), None


SDPA_SELF_ATTENTION: dict[str, type[nn.Module]] = {
    "megatron-bert": MegatronBertSdpaSelfAttention,
    "mpnet": MPNetSdpaSelfAttention,
    "deberta-v2": DebertaV2SdpaSelfAttention,
}


def use_sdpa_attention(model: nn.Module) -> nn.Module:
    """Switch the self-attention of ``model`` (a Megatron-BERT, MPNet or DeBERTa-v2 encoder) to SDPA, in place.

    ``model.config._attn_implementation`` becomes ``"sdpa"``, so the masks transformers builds take SDPA's form; the
    model gets its own copy of the config for that (``from_config`` shares the caller's config object, from which
    stock transformers would refuse to build another model). Other architectures have their own SDPA path in
    transformers: load them with ``attn_implementation="sdpa"``.
    """
    config = model.config
    sdpa_class = SDPA_SELF_ATTENTION.get(config.model_type)
    if sdpa_class is None:
        raise ValueError(
            f"no SDPA self-attention here for {config.model_type!r}; load it with attn_implementation='sdpa' "
            f"where transformers has one (ours: {', '.join(sorted(SDPA_SELF_ATTENTION))})"
        )
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise ValueError("SDPA self-attention here is for encoders: the model is a decoder or has cross-attention")
    eager_class = sdpa_class.__bases__[0]
    own_config = copy.deepcopy(config)
    own_config._attn_implementation = "sdpa"
    for module in model.modules():
        if type(module) is eager_class:
            module.__class__ = sdpa_class
        if getattr(module, "config", None) is config:
            module.config = own_config
    return model
