"""Relation classifier over a marked entity pair, for the no-prompt baseline's relation extraction.

Each input row holds one candidate pair whose two mentions are wrapped in marker tokens; the head reads the
encoder states at the two start markers (the "entity start" representation of Baldini Soares et al. 2019).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NO_RELATION = "no_relation"


@dataclass
class PairHeadOutput:
    """Output of :class:`PairClassifierHead`: ``logits`` is ``[B, num_labels]``."""

    loss: torch.Tensor | None
    logits: torch.Tensor


class PairClassifierHead(nn.Module):
    """Concatenated states at the head and tail start markers -> dropout -> Linear(2H, num_labels); cross-entropy."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * hidden_size, num_labels)

    def forward(
        self,
        hidden_states: torch.Tensor,
        head_marker: torch.Tensor,
        tail_marker: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> PairHeadOutput:
        """Relation logits per row; ``head_marker`` / ``tail_marker`` are ``[B]`` token indices, ``labels`` ``[B]``."""
        rows = torch.arange(hidden_states.shape[0], device=hidden_states.device)
        pair = torch.cat([hidden_states[rows, head_marker], hidden_states[rows, tail_marker]], dim=-1)
        logits = self.classifier(self.dropout(pair))
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return PairHeadOutput(loss=loss, logits=logits)


def pair_labels(relation_names: Sequence[str]) -> list[str]:
    """``[NO_RELATION, *relation_names]``: label 0 means the pair holds no relation."""
    if len(set(relation_names)) != len(relation_names) or NO_RELATION in relation_names:
        raise ValueError(f"relation names must be unique and must not include {NO_RELATION!r}")
    return [NO_RELATION, *relation_names]
