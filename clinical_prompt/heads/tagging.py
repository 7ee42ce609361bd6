"""BIO tagging head for the no-prompt fine-tuning baseline, its label list and its decoder."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


@dataclass
class TaggingHeadOutput:
    """Output of :class:`TaggingHead`: ``logits`` is ``[B, T, num_labels]``."""

    loss: torch.Tensor | None
    logits: torch.Tensor


class TaggingHead(nn.Module):
    """Dropout and a linear layer over the BIO labels; cross-entropy ignoring label -100."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden_states: torch.Tensor, labels: torch.Tensor | None = None) -> TaggingHeadOutput:
        """Label logits per token; with ``labels`` (``[B, T]``, -100 = ignored), also the mean loss."""
        logits = self.classifier(self.dropout(hidden_states))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        return TaggingHeadOutput(loss=loss, logits=logits)


def decode_bio(label_ids: Sequence[int] | torch.Tensor, labels: Sequence[str]) -> list[tuple[str, int, int]]:
    """Spans ``(type, start_tok, end_tok)`` (end inclusive) from one row of label ids.

    An ``I-X`` that does not continue an ``X`` span (after ``O``, another type or at the start) opens a new span.
    Negative ids (-100: special tokens, continuation word pieces) are skipped: they neither open, extend nor close
    a span.
    """
    ids = label_ids.tolist() if isinstance(label_ids, torch.Tensor) else list(label_ids)
    spans: list[tuple[str, int, int]] = []
    current: tuple[str, int, int] | None = None
    for position, label_id in enumerate(ids):
        if label_id < 0:
            continue
        prefix, _, concept = labels[label_id].partition("-")
        if current is not None and prefix == "I" and concept == current[0]:
            current = (concept, current[1], position)
            continue
        if current is not None:
            spans.append(current)
        current = (concept, position, position) if prefix in ("B", "I") else None
    if current is not None:
        spans.append(current)
    return spans
