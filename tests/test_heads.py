"""Tests for the MRC span head, the BIO tagging head and the relation pair head."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clinical_prompt.corpus import bio_label_names
from clinical_prompt.heads import (
    IGNORE_INDEX,
    NO_RELATION,
    PairClassifierHead,
    SpanHead,
    SpanHeadOutput,
    TaggingHead,
    candidate_pairs,
    decode_bio,
    decode_spans,
    pad_span_labels,
    pair_labels,
)

HIGH, LOW = 5.0, -5.0


class _TableTail(nn.Module):
    """Reads a match logit from a ``[B, T, T]`` table; pair features are (row * T + start, end)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table.flatten(0, 1)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        return self.table[pair[:, 0].long(), pair[:, 1].long()].unsqueeze(-1)


def _hand_built(
    start: list[list[float]], end: list[list[float]], match: dict[tuple[int, int, int], float]
) -> SpanHeadOutput:
    """Outputs with the given start/end logits and match logits (every pair not listed is LOW)."""
    start_logits, end_logits = torch.tensor(start), torch.tensor(end)
    rows, length = start_logits.shape
    table = torch.full((rows, length, length), LOW)
    for (row, s, e), logit in match.items():
        table[row, s, e] = logit
    positions = torch.arange(length, dtype=torch.float)
    row_offsets = torch.arange(rows, dtype=torch.float).unsqueeze(-1) * length
    pair_start = torch.stack([row_offsets + positions, torch.zeros(rows, length)], dim=-1)
    pair_end = torch.stack([torch.zeros(rows, length), positions.expand(rows, length)], dim=-1)
    return SpanHeadOutput(None, start_logits, end_logits, pair_start, pair_end, _TableTail(table))


def _logits(length: int, high: set[int]) -> list[float]:
    return [HIGH if i in high else LOW for i in range(length)]


def _spans(decoded: list[list[tuple[int, int, float]]]) -> list[list[tuple[int, int]]]:
    return [[(s, e) for s, e, _ in row] for row in decoded]


def _all_context(length: int) -> torch.Tensor:
    return torch.ones(1, length, dtype=torch.bool)


# ---------------------------------------------------------------- span decoding


def test_flat_takes_nearest_end_and_nested_keeps_every_match():
    outputs = _hand_built([_logits(8, {1})], [_logits(8, {3, 5})], {(0, 1, 3): HIGH, (0, 1, 5): HIGH})
    assert _spans(decode_spans(outputs, _all_context(8), mode="flat")) == [[(1, 3)]]
    assert _spans(decode_spans(outputs, _all_context(8), mode="nested")) == [[(1, 3), (1, 5)]]


def test_flat_drops_overlap_nested_keeps_it():
    match = {(0, 1, 4): HIGH, (0, 2, 4): HIGH}
    outputs = _hand_built([_logits(6, {1, 2})], [_logits(6, {4})], match)
    assert _spans(decode_spans(outputs, _all_context(6), mode="flat")) == [[(1, 4)]]
    assert _spans(decode_spans(outputs, _all_context(6), mode="nested")) == [[(1, 4), (2, 4)]]
    unmatched_first = _hand_built([_logits(6, {1, 2})], [_logits(6, {4})], {(0, 2, 4): HIGH})
    assert _spans(decode_spans(unmatched_first, _all_context(6), mode="flat")) == [[(2, 4)]]


def test_flat_needs_the_nearest_end_to_match():
    outputs = _hand_built([_logits(8, {1})], [_logits(8, {3, 5})], {(0, 1, 5): HIGH})
    assert _spans(decode_spans(outputs, _all_context(8), mode="flat")) == [[]]
    assert _spans(decode_spans(outputs, _all_context(8), mode="nested")) == [[(1, 5)]]


def test_scored_takes_the_best_matching_end_not_the_nearest():
    outputs = _hand_built([_logits(8, {1})], [_logits(8, {3, 5})], {(0, 1, 3): -1.0, (0, 1, 5): HIGH})
    assert _spans(decode_spans(outputs, _all_context(8), mode="flat", threshold=0.2)) == [[(1, 3)]]
    assert _spans(decode_spans(outputs, _all_context(8), mode="scored", threshold=0.2)) == [[(1, 5)]]


def test_scored_keeps_the_best_of_overlapping_spans_and_every_disjoint_one():
    start = [[LOW, 1.0, HIGH, LOW, LOW, LOW, HIGH, LOW]]
    end = [[LOW, LOW, LOW, LOW, HIGH, LOW, LOW, HIGH]]
    match = {(0, 1, 4): HIGH, (0, 2, 4): HIGH, (0, 6, 7): HIGH, (0, 2, 7): 2.0}
    outputs = _hand_built(start, end, match)
    assert _spans(decode_spans(outputs, _all_context(8), mode="flat")) == [[(1, 4), (6, 7)]]
    assert _spans(decode_spans(outputs, _all_context(8), mode="scored")) == [[(2, 4), (6, 7)]]


def test_word_boundary_masks_block_mid_word_spans():
    # Tokens 2-3 are one word ("met", "##formin"): a span may start at 2 but not at 3, end at 3 but not at 2.
    match = {(0, 2, 2): HIGH, (0, 2, 3): HIGH, (0, 3, 3): HIGH}
    outputs = _hand_built([_logits(6, {2, 3})], [_logits(6, {2, 3})], match)
    word_start = torch.tensor([[True, True, True, False, True, True]])
    word_end = torch.tensor([[True, True, False, True, True, True]])
    for mode in ("flat", "scored", "nested"):
        decoded = decode_spans(outputs, _all_context(6), word_start, word_end, mode=mode)
        assert _spans(decoded) == [[(2, 3)]]


def test_context_mask_blocks_query_tokens():
    match = {(0, 1, 2): HIGH, (0, 1, 5): HIGH, (0, 4, 5): HIGH}
    outputs = _hand_built([_logits(7, {1, 4})], [_logits(7, {2, 5})], match)
    context = torch.tensor([[False, False, False, True, True, True, True]])
    for mode in ("flat", "scored", "nested"):
        assert _spans(decode_spans(outputs, context, mode=mode)) == [[(4, 5)]]


def test_threshold_max_span_len_and_rows():
    match = {(0, 0, 0): 0.5, (0, 2, 5): HIGH, (1, 1, 1): HIGH}
    outputs = _hand_built([_logits(6, {0, 2}), _logits(6, {1})], [_logits(6, {0, 5}), _logits(6, {1})], match)
    context = torch.ones(2, 6, dtype=torch.bool)
    decoded = decode_spans(outputs, context, mode="flat", threshold=0.5)
    assert _spans(decoded) == [[(0, 0), (2, 5)], [(1, 1)]]
    assert decoded[0][1][2] == pytest.approx(torch.sigmoid(torch.tensor(HIGH)).item())
    assert _spans(decode_spans(outputs, context, mode="flat", threshold=0.7)) == [[(2, 5)], [(1, 1)]]
    for mode in ("flat", "nested"):
        assert _spans(decode_spans(outputs, context, mode=mode, max_span_len=3)) == [[(0, 0)], [(1, 1)]]
    with pytest.raises(ValueError, match="mode"):
        decode_spans(outputs, context, mode="overlapping")


def test_candidate_pairs_match_brute_force():
    generator = torch.Generator().manual_seed(0)
    start_ok = torch.rand(3, 9, generator=generator) > 0.4
    end_ok = torch.rand(3, 9, generator=generator) > 0.4
    for max_len in (None, 1, 3, 20):
        bound = max_len or 9
        expected = [
            (b, s, e)
            for b, s, e in itertools.product(range(3), range(9), range(9))
            if start_ok[b, s] and end_ok[b, e] and 0 <= e - s < bound
        ]
        rows, starts, ends = candidate_pairs(start_ok, end_ok, max_len)
        assert list(zip(rows.tolist(), starts.tolist(), ends.tolist())) == expected


# ---------------------------------------------------------------- span head loss


def _pair_features(head: SpanHead, hidden: torch.Tensor, row: int, start: int, end: int) -> torch.Tensor:
    """The naive match MLP over the concatenated pair."""
    return head.match(torch.cat([hidden[row, start], hidden[row, end]])).squeeze(-1)


def test_factorized_match_equals_concatenated_mlp():
    torch.manual_seed(0)
    head = SpanHead(16, intermediate_size=24).double().eval()
    hidden = torch.randn(2, 7, 16, dtype=torch.float64)
    outputs = head(hidden, torch.ones(2, 7))
    rows, starts, ends = candidate_pairs(torch.ones(2, 7, dtype=torch.bool), torch.ones(2, 7, dtype=torch.bool))
    naive = torch.stack([_pair_features(head, hidden, b, s, e) for b, s, e in zip(rows, starts, ends)])
    torch.testing.assert_close(outputs.match_logits(rows, starts, ends), naive, atol=1e-6, rtol=0)


def test_loss_is_weighted_mean_of_masked_bce_terms():
    torch.manual_seed(0)
    head = SpanHead(8, dropout=0.0, max_span_len=4)
    hidden = torch.randn(2, 8, 8)
    context = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1, 1, 1]])
    word_start = torch.tensor([[1, 1, 1, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 1, 1]])
    word_end = torch.tensor([[1, 1, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 1, 1, 1]])
    spans = [[(2, 3), (4, 6)], [(1, 1), (3, 6)]]
    start_labels, end_labels = torch.zeros(2, 8), torch.zeros(2, 8)
    for row, row_spans in enumerate(spans):
        for s, e in row_spans:
            start_labels[row, s], end_labels[row, e] = 1, 1
    outputs = head(hidden, context, word_start, word_end, start_labels, end_labels, spans)

    def bce(logit: torch.Tensor, label: float | torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logit, torch.tensor(float(label)))

    start_ok, end_ok = (context * word_start).bool(), (context * word_end).bool()
    tokens = list(itertools.product(range(2), range(8)))
    start_terms = [bce(outputs.start_logits[b, t], start_labels[b, t]) for b, t in tokens if start_ok[b, t]]
    end_terms = [bce(outputs.end_logits[b, t], end_labels[b, t]) for b, t in tokens if end_ok[b, t]]
    match_terms = []
    for b, s, e in itertools.product(range(2), range(8), range(8)):
        predicted = outputs.start_logits[b, s] > 0 and outputs.end_logits[b, e] > 0
        gold_pair = start_labels[b, s] == 1 and end_labels[b, e] == 1
        if start_ok[b, s] and end_ok[b, e] and 0 <= e - s < 4 and (predicted or gold_pair):
            match_terms.append(bce(_pair_features(head, hidden, b, s, e), float((s, e) in spans[b])))
    assert len(match_terms) > 4
    mean = lambda terms: torch.stack(terms).mean()  # noqa: E731
    expected = (mean(start_terms) + mean(end_terms) + 0.1 * mean(match_terms)) / 2.1
    torch.testing.assert_close(outputs.loss, expected, atol=1e-6, rtol=0)

    as_tensor = head(hidden, context, word_start, word_end, start_labels, end_labels, pad_span_labels(spans))
    torch.testing.assert_close(as_tensor.loss, outputs.loss)


def test_labels_must_come_together_and_weights_are_checked():
    head = SpanHead(4)
    with pytest.raises(ValueError, match="together"):
        head(torch.randn(1, 3, 4), torch.ones(1, 3), start_labels=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="loss_weights"):
        SpanHead(4, loss_weights=(1.0, -1.0, 0.1))


def test_pad_span_labels():
    padded = pad_span_labels([[(1, 2), (4, 4)], [], [(0, 3)]])
    assert padded.tolist() == [[[1, 2], [4, 4]], [[-1, -1], [-1, -1]], [[0, 3], [-1, -1]]]
    assert pad_span_labels([[], []]).shape == (2, 0, 2)


# ---------------------------------------------------------------- span head training

_T, _H, _QUERY, _SPANS = 20, 32, 4, 3


def _span_batch(seed: int, rows: int):
    """Random states with a learnable pattern: starts carry ``u``, ends ``v``, and both ends of a span share a code.

    Query tokens and one mid-word token per row look like boundaries too; the masks must keep them out.
    """
    basis = torch.linalg.qr(torch.randn(_H, _H, generator=torch.Generator().manual_seed(0)))[0]
    u, v, codes = 3 * basis[0], 3 * basis[1], 3 * basis[2 : 2 + _SPANS]
    generator = torch.Generator().manual_seed(seed)
    hidden = 0.3 * torch.randn(rows, _T, _H, generator=generator)
    context = torch.zeros(rows, _T, dtype=torch.bool)
    context[:, _QUERY:] = True
    word_start = torch.ones(rows, _T, dtype=torch.bool)
    word_end = torch.ones(rows, _T, dtype=torch.bool)
    hidden[:, 1] += u + codes[0]
    hidden[:, 2] += v + codes[0]
    hidden[:, -1] += u + v + codes[0]
    word_start[:, -1] = word_end[:, -1] = False
    start_labels, end_labels, spans = torch.zeros(rows, _T), torch.zeros(rows, _T), []
    for b in range(rows):
        row_spans, position = [], _QUERY
        for code in codes:
            position += int(torch.randint(0, 3, (1,), generator=generator))
            end = position + int(torch.randint(0, 3, (1,), generator=generator))
            if end >= _T - 2:
                break
            hidden[b, position] += u + code
            hidden[b, end] += v + code
            start_labels[b, position], end_labels[b, end] = 1, 1
            row_spans.append((position, end))
            position = end + 2
        spans.append(row_spans)
    return hidden, context, word_start, word_end, start_labels, end_labels, spans


def test_span_head_learns_pattern_and_decodes_gold_spans():
    torch.manual_seed(0)
    head = SpanHead(_H)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    batch = _span_batch(seed=1, rows=64)
    losses = []
    for _ in range(150):
        loss = head(*batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.4 * losses[0]

    head.eval()
    hidden, context, word_start, word_end, *_, gold = _span_batch(seed=2, rows=32)
    with torch.no_grad():
        outputs = head(hidden, context)
    for mode in ("flat", "nested"):
        assert _spans(decode_spans(outputs, context, word_start, word_end, mode=mode)) == gold
    unmasked = _spans(decode_spans(outputs, torch.ones_like(context), mode="nested"))
    assert all((1, 2) in row for row in unmasked)  # the query look-alike decodes once the masks are gone


# ---------------------------------------------------------------- BIO tagging


def test_bio_labels():
    assert bio_label_names(["Drug", "Route"]) == ["O", "B-Drug", "I-Drug", "B-Route", "I-Route"]
    with pytest.raises(ValueError, match="unique"):
        bio_label_names(["Drug", "Drug"])


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["B-Drug", "I-Drug", "O", "B-Route"], [("Drug", 0, 1), ("Route", 3, 3)]),
        (["I-Drug", "I-Drug", "O"], [("Drug", 0, 1)]),
        (["O", "I-Drug", "O", "I-Drug"], [("Drug", 1, 1), ("Drug", 3, 3)]),
        (["B-Drug", "I-Route", "I-Route"], [("Drug", 0, 0), ("Route", 1, 2)]),
        (["B-Drug", "B-Drug", "I-Drug"], [("Drug", 0, 0), ("Drug", 1, 2)]),
        (["O", "O"], []),
        (["B-Drug", None, "I-Drug", None, "O", None], [("Drug", 0, 2)]),
        ([None, "I-Route", None], [("Route", 1, 1)]),
    ],
)
def test_decode_bio(tags, expected):
    labels = bio_label_names(["Drug", "Route"])
    ids = [IGNORE_INDEX if tag is None else labels.index(tag) for tag in tags]
    assert decode_bio(ids, labels) == expected
    assert decode_bio(torch.tensor(ids), labels) == expected


def test_tagging_loss_ignores_masked_positions():
    torch.manual_seed(0)
    head = TaggingHead(8, num_labels=5, dropout=0.0)
    hidden = torch.randn(2, 4, 8)
    labels = torch.full((2, 4), IGNORE_INDEX)
    labels[0, 1], labels[1, 3] = 2, 4
    outputs = head(hidden, labels)
    assert outputs.logits.shape == (2, 4, 5)
    expected = F.cross_entropy(outputs.logits[[0, 1], [1, 3]], torch.tensor([2, 4]))
    torch.testing.assert_close(outputs.loss, expected)
    assert head(hidden).loss is None


# ---------------------------------------------------------------- relation pair head


def _pair_batch(seed: int, rows: int, length: int = 10, hidden_size: int = 12):
    """The relation is the quadrant of (head marker feature 0, tail marker feature 1), kept 1 away from the axes."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, length, hidden_size, generator=generator)
    head_marker = torch.randint(0, length // 2, (rows,), generator=generator)
    tail_marker = torch.randint(length // 2, length, (rows,), generator=generator)
    index = torch.arange(rows)
    hidden[index, head_marker, 0] += hidden[index, head_marker, 0].sign()
    hidden[index, tail_marker, 1] += hidden[index, tail_marker, 1].sign()
    labels = (hidden[index, head_marker, 0] > 0).long() * 2 + (hidden[index, tail_marker, 1] > 0).long()
    return hidden, head_marker, tail_marker, labels


def test_pair_head_learns_toy_relation():
    torch.manual_seed(0)
    head = PairClassifierHead(12, num_labels=4)
    optimizer = torch.optim.Adam(head.parameters(), lr=5e-2)
    batch = _pair_batch(seed=1, rows=256)
    for _ in range(100):
        loss = head(*batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    hidden, head_marker, tail_marker, labels = _pair_batch(seed=2, rows=256)
    predicted = head(hidden, head_marker, tail_marker).logits.argmax(-1)
    assert (predicted == labels).float().mean() > 0.9


def test_pair_labels():
    assert pair_labels(["Dosage-Drug", "Route-Drug"]) == [NO_RELATION, "Dosage-Drug", "Route-Drug"]
    with pytest.raises(ValueError):
        pair_labels(["Route-Drug", NO_RELATION])


def test_positive_weight_scales_the_loss_of_gold_boundaries_only():
    hidden, context = torch.zeros(1, 4, _H), torch.ones(1, 4, dtype=torch.bool)
    starts = ends = torch.tensor([[0, 1, 0, 0]])
    losses = {}
    for weight in (1.0, 3.0):
        torch.manual_seed(0)
        head = SpanHead(_H, dropout=0.0, loss_weights=(1.0, 1.0, 0.0), positive_weight=weight)
        with torch.no_grad():
            head.start.bias.zero_(), head.end.bias.zero_()
        losses[weight] = head(hidden, context, None, None, starts, ends, [[(1, 1)]]).loss
    # logit 0 at every token: the loss is (w + 3) / 4 times one token's, so it grows by (3 + 3) / (1 + 3)
    assert torch.isclose(losses[3.0], losses[1.0] * 6 / 4)


def test_match_floor_sets_which_pairs_the_match_loss_sees():
    torch.manual_seed(0)
    head = SpanHead(_H, dropout=0.0, loss_weights=(0.0, 0.0, 1.0), match_floor=0.05)
    with torch.no_grad():
        head.start.weight.zero_(), head.end.weight.zero_()
        head.start.bias.fill_(-1.0), head.end.bias.fill_(-1.0)  # every token at probability 0.27
    hidden, context = torch.randn(1, 5, _H), torch.ones(1, 5, dtype=torch.bool)
    starts = ends = torch.tensor([[0, 0, 1, 0, 0]])
    low = head(hidden, context, None, None, starts, ends, [[(2, 2)]]).loss
    head.match_floor_logit = 0.0  # the reference floor of 0.5: only the gold pair is a candidate
    reference = head(hidden, context, None, None, starts, ends, [[(2, 2)]]).loss
    match = torch.sigmoid(head(hidden, context).match_logits(torch.tensor([0]), torch.tensor([2]), torch.tensor([2])))
    assert torch.isclose(reference, -torch.log(match))
    assert not torch.isclose(low, reference)
