"""MRC span head: start, end and start-end match scores over encoder states (Li et al. 2020, "unified MRC for NER").

Token positions are those of the text tokens (virtual prompt positions already removed). Spans are
``(start_tok, end_tok)`` with both ends inclusive.

Memory: the match MLP's first layer over the concatenated pair ``[h_s; h_e]`` is computed in factorized form,
``W [h_s; h_e] + b = (W_s h_s + b) + W_e h_e``, which is exactly equal. Each token is projected once
(``[B, T, I]`` twice) and the rest of the MLP runs only on the candidate pairs that are scored, so no
``[B, T, T, 2H]`` tensor is ever built. ``max_span_len`` bounds the candidate pairs to a band of ``T x max_span_len``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

SpanLabels = torch.Tensor | Sequence[Sequence[tuple[int, int]]]
DECODING_MODES = ("flat", "scored", "nested")


@dataclass
class SpanHeadOutput:
    """Output of :class:`SpanHead`.

    ``pair_start`` and ``pair_end`` are the two halves of the match MLP's first layer (``[B, T, I]``);
    :meth:`match_logits` finishes the MLP for any set of ``(row, start, end)`` pairs.
    """

    loss: torch.Tensor | None
    start_logits: torch.Tensor
    end_logits: torch.Tensor
    pair_start: torch.Tensor
    pair_end: torch.Tensor
    match_tail: nn.Module

    def match_logits(self, rows: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        """Match logits ``[N]`` of the pairs ``(rows[k], starts[k], ends[k])``."""
        return self.match_tail(self.pair_start[rows, starts] + self.pair_end[rows, ends]).squeeze(-1)


class SpanHead(nn.Module):
    """Start/end logits (Linear H->1 each) and a start-end match MLP (2H -> I -> 1, GELU, dropout).

    Training loss, as in the reference implementation: BCE over start and end logits (only context tokens on a
    word start / word end count) and BCE over the match logits of candidate pairs (start <= end, within
    ``max_span_len``, and predicted start x predicted end or gold start x gold end), combined as
    ``(w_s * L_start + w_e * L_end + w_m * L_match) / (w_s + w_e + w_m)`` with weights 1 : 1 : 0.1 by default.

    ``positive_weight`` multiplies the start/end loss of gold tokens (a few percent of the tokens are positive).
    ``match_floor``: a start or end counts as predicted for the match loss once its probability exceeds this
    (0.5 in the reference implementation); set it at or below the decoding threshold, so that the match MLP is
    trained on the pairs it will be asked to judge.
    """

    def __init__(
        self,
        hidden_size: int,
        dropout: float = 0.3,
        intermediate_size: int | None = None,
        max_span_len: int | None = None,
        loss_weights: tuple[float, float, float] = (1.0, 1.0, 0.1),
        match_floor: float = 0.5,
        positive_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0.0 < match_floor < 1.0:
            raise ValueError(f"match_floor must be in (0, 1), got {match_floor}")
        if positive_weight <= 0:
            raise ValueError(f"positive_weight must be > 0, got {positive_weight}")
        if max_span_len is not None and max_span_len < 1:
            raise ValueError(f"max_span_len must be >= 1, got {max_span_len}")
        if len(loss_weights) != 3 or min(loss_weights) < 0 or sum(loss_weights) <= 0:
            raise ValueError(f"loss_weights must be three non-negative numbers with a positive sum, got {loss_weights}")
        intermediate_size = intermediate_size or hidden_size
        self.hidden_size = hidden_size
        self.max_span_len = max_span_len
        self.loss_weights = tuple(float(w) for w in loss_weights)
        self.match_floor_logit = math.log(match_floor / (1 - match_floor))
        self.positive_weight = float(positive_weight)
        self.dropout = nn.Dropout(dropout)
        self.start = nn.Linear(hidden_size, 1)
        self.end = nn.Linear(hidden_size, 1)
        self.match = nn.Sequential(
            nn.Linear(2 * hidden_size, intermediate_size),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(intermediate_size, 1),
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        context_mask: torch.Tensor,
        word_start_mask: torch.Tensor | None = None,
        word_end_mask: torch.Tensor | None = None,
        start_labels: torch.Tensor | None = None,
        end_labels: torch.Tensor | None = None,
        span_labels: SpanLabels | None = None,
    ) -> SpanHeadOutput:
        """Score every token; with labels, also return the loss.

        Masks are ``[B, T]`` (nonzero = true); word masks default to every token. ``span_labels`` is either a
        ``[B, S, 2]`` long tensor of gold ``(start, end)`` pairs padded with -1 (see :func:`pad_span_labels`)
        or one list of pairs per row.
        """
        labels = (start_labels, end_labels, span_labels)
        if any(x is not None for x in labels) and any(x is None for x in labels):
            raise ValueError("start_labels, end_labels and span_labels must be given together")
        hidden = self.dropout(hidden_states)
        first = self.match[0]
        w_start, w_end = first.weight.split(self.hidden_size, dim=1)
        output = SpanHeadOutput(
            loss=None,
            start_logits=self.start(hidden).squeeze(-1),
            end_logits=self.end(hidden).squeeze(-1),
            pair_start=F.linear(hidden, w_start, first.bias),
            pair_end=F.linear(hidden, w_end),
            match_tail=self.match[1:],
        )
        if start_labels is not None:
            output.loss = self._loss(
                output, context_mask, word_start_mask, word_end_mask, start_labels, end_labels, span_labels
            )
        return output

    def _loss(
        self,
        output: SpanHeadOutput,
        context_mask: torch.Tensor,
        word_start_mask: torch.Tensor | None,
        word_end_mask: torch.Tensor | None,
        start_labels: torch.Tensor,
        end_labels: torch.Tensor,
        span_labels: SpanLabels,
    ) -> torch.Tensor:
        start_ok, end_ok = boundary_masks(context_mask, word_start_mask, word_end_mask)
        gold_start, gold_end = start_labels.bool(), end_labels.bool()
        start_loss = _masked_bce(output.start_logits, gold_start, start_ok, self.positive_weight)
        end_loss = _masked_bce(output.end_logits, gold_end, end_ok, self.positive_weight)

        floor = self.match_floor_logit
        start_kept = start_ok & ((output.start_logits > floor) | gold_start)
        end_kept = end_ok & ((output.end_logits > floor) | gold_end)
        rows, starts, ends = candidate_pairs(start_kept, end_kept, self.max_span_len)
        predicted = (output.start_logits[rows, starts] > floor) & (output.end_logits[rows, ends] > floor)
        candidates = predicted | (gold_start[rows, starts] & gold_end[rows, ends])
        rows, starts, ends = rows[candidates], starts[candidates], ends[candidates]
        gold = _is_gold(rows, starts, ends, _as_span_tensor(span_labels, start_labels.device), start_labels.shape[1])
        match_logits = output.match_logits(rows, starts, ends)
        match_loss = F.binary_cross_entropy_with_logits(match_logits, gold.float(), reduction="sum") / max(len(rows), 1)

        w_s, w_e, w_m = self.loss_weights
        return (w_s * start_loss + w_e * end_loss + w_m * match_loss) / (w_s + w_e + w_m)


def boundary_masks(
    context_mask: torch.Tensor,
    word_start_mask: torch.Tensor | None = None,
    word_end_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens that may start / end a span: context tokens on a word start / word end (bool ``[B, T]`` each)."""
    context = context_mask.bool()
    start_ok = context if word_start_mask is None else context & word_start_mask.bool()
    end_ok = context if word_end_mask is None else context & word_end_mask.bool()
    return start_ok, end_ok


def candidate_pairs(
    start_ok: torch.Tensor, end_ok: torch.Tensor, max_span_len: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All ``(row, start, end)`` with ``start_ok[row, start]``, ``end_ok[row, end]`` and
    ``0 <= end - start < max_span_len`` (no bound when None), as three ``[N]`` long tensors.

    Built over a ``[B, T, max_span_len]`` band, never a ``[B, T, T]`` grid unless the length is unbounded.
    """
    length = start_ok.shape[1] if max_span_len is None else min(max_span_len, start_ok.shape[1])
    band_end = F.pad(end_ok, (0, length - 1)).unfold(1, length, 1)  # band_end[b, i, d] = end_ok[b, i + d]
    rows, starts, offsets = (start_ok.unsqueeze(-1) & band_end).nonzero(as_tuple=True)
    return rows, starts, starts + offsets


def pad_span_labels(spans: Sequence[Sequence[tuple[int, int]]]) -> torch.Tensor:
    """Gold spans, one list of ``(start, end)`` per row, as a ``[B, S, 2]`` long tensor padded with -1."""
    width = max((len(row) for row in spans), default=0)
    padded = torch.full((len(spans), width, 2), -1, dtype=torch.long)
    for i, row in enumerate(spans):
        if row:
            padded[i, : len(row)] = torch.tensor(row, dtype=torch.long).view(-1, 2)
    return padded


def _as_span_tensor(span_labels: SpanLabels, device: torch.device) -> torch.Tensor:
    padded = span_labels if isinstance(span_labels, torch.Tensor) else pad_span_labels(span_labels)
    return padded.to(device=device, dtype=torch.long)


def _is_gold(
    rows: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, spans: torch.Tensor, length: int
) -> torch.Tensor:
    """Whether each ``(row, start, end)`` is one of the gold spans ``[B, S, 2]`` (-1 = padding)."""
    gold_rows, gold_index = (spans[..., 0] >= 0).nonzero(as_tuple=True)
    gold = spans[gold_rows, gold_index]
    gold_keys = (gold_rows * length + gold[:, 0]) * length + gold[:, 1]
    return torch.isin((rows * length + starts) * length + ends, gold_keys)


def _masked_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, positive_weight: float) -> torch.Tensor:
    weight = logits.new_tensor(positive_weight)
    losses = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none", pos_weight=weight)
    return (losses * mask).sum() / mask.sum().clamp_min(1)


def decode_spans(
    outputs: SpanHeadOutput,
    context_mask: torch.Tensor,
    word_start_mask: torch.Tensor | None = None,
    word_end_mask: torch.Tensor | None = None,
    *,
    mode: Literal["flat", "scored", "nested"] = "flat",
    threshold: float = 0.5,
    max_span_len: int | None = None,
) -> list[list[tuple[int, int, float]]]:
    """Spans per row as sorted ``(start_tok, end_tok, score)``, ends inclusive; the score is the smallest of the
    span's start, end and match probabilities, so it exceeds ``threshold`` exactly where the span is kept.

    Starts and ends are context tokens on a word start / end whose probability exceeds ``threshold``.
    ``flat``: each start takes its nearest end at or after it; the pair is kept if its match probability exceeds
    ``threshold`` and it does not overlap a span kept from an earlier start (left to right).
    ``scored``: every start-end pair whose match probability exceeds ``threshold`` is a candidate; candidates are
    kept from the highest score down, each unless it overlaps one kept.
    ``nested``: every start-end pair (start <= end) whose match probability exceeds ``threshold``.
    Pairs longer than ``max_span_len`` tokens are never kept (no bound when None).
    """
    if mode not in DECODING_MODES:
        raise ValueError(f"mode must be one of {', '.join(DECODING_MODES)}, got {mode!r}")
    start_ok, end_ok = boundary_masks(context_mask, word_start_mask, word_end_mask)
    start_p, end_p = torch.sigmoid(outputs.start_logits.float()), torch.sigmoid(outputs.end_logits.float())
    start_ok = start_ok & (start_p > threshold)
    end_ok = end_ok & (end_p > threshold)
    if mode == "flat":
        rows, starts, ends = _nearest_end_pairs(start_ok, end_ok, max_span_len)
    else:
        rows, starts, ends = candidate_pairs(start_ok, end_ok, max_span_len)
    match = torch.sigmoid(outputs.match_logits(rows, starts, ends).float())
    keep = match > threshold
    scores = torch.minimum(torch.minimum(start_p[rows, starts], end_p[rows, ends]), match)
    rows, starts, ends, scores = rows[keep], starts[keep], ends[keep], scores[keep]
    spans: list[list[tuple[int, int, float]]] = [[] for _ in range(start_ok.shape[0])]
    if mode == "scored":
        return _best_non_overlapping(rows, starts, ends, scores, spans)
    for row, start, end, score in zip(rows.tolist(), starts.tolist(), ends.tolist(), scores.tolist()):
        if mode == "nested" or not spans[row] or start > spans[row][-1][1]:
            spans[row].append((start, end, score))
    return spans


def _best_non_overlapping(
    rows: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, scores: torch.Tensor,
    spans: list[list[tuple[int, int, float]]],
) -> list[list[tuple[int, int, float]]]:
    """``spans`` filled per row with the candidates of highest score that overlap none kept before them, each row's
    spans sorted by start."""
    rows_, starts_, ends_, scores_ = rows.tolist(), starts.tolist(), ends.tolist(), scores.tolist()
    for i in scores.argsort(descending=True).tolist():
        row, start, end = rows_[i], starts_[i], ends_[i]
        if all(end < s or start > e for s, e, _ in spans[row]):
            spans[row].append((start, end, scores_[i]))
    for row_spans in spans:
        row_spans.sort()
    return spans


def _nearest_end_pairs(
    start_ok: torch.Tensor, end_ok: torch.Tensor, max_span_len: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each allowed start paired with the nearest allowed end at or after it, sorted by row then start."""
    length = end_ok.shape[1]
    positions = torch.arange(length, device=end_ok.device).expand_as(end_ok)
    next_end = torch.where(end_ok, positions, length).flip(1).cummin(1).values.flip(1)
    rows, starts = start_ok.nonzero(as_tuple=True)
    ends = next_end[rows, starts]
    keep = ends < length
    if max_span_len is not None:
        keep &= ends - starts < max_span_len
    return rows[keep], starts[keep], ends[keep]
