"""Input-layer prompts: virtual tokens spliced into the embedded input, stripped again from the output.

Layout: ``[first token] + prompt + rest``; the first token is ``[CLS]`` / ``<s>``, so pooling on position 0 still
sees it and the prompt takes the query's slot of an MRC input. The text keeps the position ids (and token types) it
has without a prompt, so labels and pretrained positions never shift; prompt tokens share the first token's
position id and token type (a trainable prompt absorbs any fixed offset). Models whose relative terms come from the
sequence index (DeBERTa-v2 relative attention, MPNet) see the first token ``P`` steps further from the rest.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def _insert(text: Tensor, block: Tensor) -> Tensor:
    """``block`` placed after the first token of ``text`` along dimension 1."""
    return torch.cat([text[:, :1], block, text[:, 1:]], dim=1)


def text_position_ids(backbone: nn.Module, input_ids: Tensor) -> Tensor:
    """The position ids ``backbone`` gives ``input_ids`` by default.

    Position embeddings with a padding index (RoBERTa, MPNet) count non-padding tokens from ``padding_idx + 1`` and
    give padding ``padding_idx``; others count from 0.
    """
    positions = getattr(backbone.base_model.embeddings, "position_embeddings", None)
    padding_idx = getattr(positions, "padding_idx", None)
    if padding_idx is None:
        return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    real = input_ids.ne(padding_idx).long()
    return torch.cumsum(real, dim=1) * real + padding_idx


def embed_with_prompts(
    backbone: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    prompt_embeds: Tensor,
    token_type_ids: Tensor | None = None,
    prefix_mask: Tensor | None = None,
) -> Tensor:
    """Run the encoder ``backbone`` with ``prompt_embeds`` after each row's first token.

    Args:
        input_ids, attention_mask, token_type_ids: the text, ``[batch, seq]``.
        prompt_embeds: ``[batch, prompt_len, embedding_dim]`` in the word-embedding space; rows may differ.
        prefix_mask: ``[batch, prompt_len]``, 1 = attend (default all), so prompts of different lengths share a batch.

    Returns:
        The last hidden states of the text tokens, ``[batch, seq, hidden]``, one-to-one with ``input_ids``.
    """
    batch, prompt_len = prompt_embeds.shape[:2]
    words = backbone.get_input_embeddings()(input_ids)
    if prefix_mask is None:
        prefix_mask = attention_mask.new_ones(batch, prompt_len)
    positions = text_position_ids(backbone, input_ids)
    inputs = {
        "inputs_embeds": _insert(words, prompt_embeds.to(words.dtype)),
        "attention_mask": _insert(attention_mask, prefix_mask.to(attention_mask.dtype)),
        "position_ids": _insert(positions, positions[:, :1].expand(batch, prompt_len)),
    }
    if token_type_ids is not None:
        inputs["token_type_ids"] = _insert(token_type_ids, token_type_ids[:, :1].expand(batch, prompt_len))
    hidden = backbone(**inputs).last_hidden_state
    return torch.cat([hidden[:, :1], hidden[:, 1 + prompt_len :]], dim=1)
