"""Model examples from mapped Documents: MRC concept and relation examples, BIO examples.

Every builder returns one dict per example (a row for :func:`to_dataset`; typed as :class:`ConceptRow`,
:class:`RelationRow` and :class:`BioRow`):

* ``example_id``, ``doc_id``, ``window_start``, ``window_end``: where the context lies in the document;
* ``input_ids``, ``attention_mask``, ``token_type_ids`` (only where the tokenizer uses them);
* ``offset_mapping``: each token's ``[start, end)`` in *document* characters, ``[0, 0]`` for tokens that
  are not context text (special tokens, query, head markers), so predicted token spans decode straight
  back to document spans with :func:`~clinical_prompt.corpus.alignment.token_span_to_char_span`;
* MRC rows: ``type``, ``prompt_id``, ``start_labels`` / ``end_labels`` (1 at gold span starts / ends,
  0 elsewhere in the context, -100 outside it) and ``span_labels`` (gold ``[first, last]`` positions,
  inclusive, for the start-end match loss); relation rows add ``head_id``, ``head_start``, ``head_end``;
* BIO rows: ``labels`` (ids into :func:`bio_label_names`, -100 outside the context).

A document is tokenized once and a context is a slice of its tokens, so gold spans are aligned once per
document (see :mod:`~clinical_prompt.corpus.alignment` for discontinuous and off-token spans). Hard prompts
read ``[CLS] query [SEP] context [SEP]``; soft prompts read ``[CLS] context [SEP]`` and name their prompt
block by ``prompt_id`` (concept types first, then relation types, in schema order). The
``num_virtual_tokens`` of a soft prompt are taken out of the ``max_length`` budget.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeGuard

from clinical_prompt.brat import Document, Entity, Span
from clinical_prompt.corpus.alignment import OUTSIDE, TokenizedText, TokenSpan, bio_tags, tokenize_text
from clinical_prompt.corpus.windows import Window, document_units, pack_windows, unit_index, window_around
from clinical_prompt.schema import TaskSchema

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

IGNORE = -100
Prompt = Literal["hard", "soft"]
HeadMarking = Literal["markers", "segment"]


class _TokenTypes(TypedDict, total=False):
    token_type_ids: list[int]  # only where the tokenizer uses them


class EncodedRow(_TokenTypes):
    """Where a row's context lies in its document and the model inputs of the row."""

    example_id: str
    doc_id: str
    window_start: int
    window_end: int
    input_ids: list[int]
    attention_mask: list[int]
    offset_mapping: list[Span]


class ConceptRow(EncodedRow):
    """An MRC concept question: one window x concept type, with its start/end/span labels."""

    type: str
    prompt_id: int
    start_labels: list[int]
    end_labels: list[int]
    span_labels: list[list[int]]


class RelationRow(ConceptRow):
    """An MRC relation question: one head entity x relation type; the labels mark the head's tails."""

    head_id: str
    head_start: int
    head_end: int


class BioRow(EncodedRow):
    """A BIO tagging window."""

    labels: list[int]


def is_relation_row(row: ConceptRow | RelationRow) -> TypeGuard[RelationRow]:
    """Whether an MRC row asks a relation question (it names a head entity) rather than a concept question."""
    return "head_id" in row


class _Layout:
    """Where a tokenizer puts its special tokens around one or two sequences (probed once)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pair: bool) -> None:
        probe = tokenizer(*(("a", "b") if pair else ("a",)), return_token_type_ids=True)
        self.items: list[tuple[int | None, int | None, int]] = []  # (special id, sequence index, type id)
        for token_id, type_id, sequence in zip(probe["input_ids"], probe["token_type_ids"], probe.sequence_ids()):
            if sequence is None:
                self.items.append((token_id, None, type_id))
            elif not self.items or self.items[-1][1] != sequence:
                self.items.append((None, sequence, type_id))
        self.num_special = sum(1 for _, sequence, _ in self.items if sequence is None)
        self.with_type_ids = "token_type_ids" in tokenizer.model_input_names

    def build(
        self, sequences: Sequence[Sequence[int]], segment: Sequence[int] | None
    ) -> tuple[list[int], list[int], int]:
        """Input ids and token type ids of ``sequences`` joined with special tokens, and the position of
        the last sequence (the context); ``segment`` (0/1 per context token) is added to its type ids."""
        ids: list[int] = []
        types: list[int] = []
        context_start = 0
        for token_id, sequence, type_id in self.items:
            if sequence is None:
                ids.append(token_id)
                types.append(type_id)
                continue
            tokens = sequences[sequence]
            if sequence == len(sequences) - 1:
                context_start = len(ids)
                types.extend(type_id + flag for flag in (segment or [0] * len(tokens)))
            else:
                types.extend([type_id] * len(tokens))
            ids.extend(tokens)
        return ids, types, context_start


@dataclass
class _Context:
    """The tokens of one window, with marker tokens inserted around ``marked`` document tokens."""

    window: Window
    input_ids: list[int]
    offsets: list[Span]
    marked: TokenSpan | None = None
    marker_lengths: tuple[int, int] = (0, 0)

    def index(self, token: int) -> int | None:
        """Position in the context of document token ``token``; None outside the window."""
        if not self.window.token_start <= token < self.window.token_end:
            return None
        index = token - self.window.token_start
        if self.marked is not None:
            index += (self.marker_lengths[0] * (token >= self.marked[0])
                      + self.marker_lengths[1] * (token > self.marked[1]))
        return index


def _context(tokens: TokenizedText, window: Window, marked: TokenSpan | None = None,
             markers: tuple[list[int], list[int]] = ([], [])) -> _Context:
    ids = list(tokens.input_ids[window.token_start : window.token_end])
    offsets = list(tokens.offsets[window.token_start : window.token_end])
    if marked is None:
        return _Context(window, ids, offsets)
    first, last = max(marked[0], window.token_start), min(marked[1], window.token_end - 1)
    a, b = first - window.token_start, last + 1 - window.token_start
    opening, closing = markers
    ids = ids[:a] + opening + ids[a:b] + closing + ids[b:]
    offsets = offsets[:a] + [(0, 0)] * len(opening) + offsets[a:b] + [(0, 0)] * len(closing) + offsets[b:]
    return _Context(window, ids, offsets, (first, last), (len(opening), len(closing)))


def _encode(layout: _Layout, context: _Context, query: Sequence[int] | None,
            segment: Sequence[int] | None = None) -> tuple[dict[str, Any], int]:
    """Model inputs of one example and the position of its first context token."""
    ids, types, start = layout.build([context.input_ids] if query is None else [query, context.input_ids], segment)
    offsets = [(0, 0)] * len(ids)
    offsets[start : start + len(context.offsets)] = context.offsets
    row: dict[str, Any] = {"window_start": context.window.start, "window_end": context.window.end, "input_ids": ids,
                           "attention_mask": [1] * len(ids)}
    if layout.with_type_ids:
        row["token_type_ids"] = types
    row["offset_mapping"] = offsets
    return row, start


def _mrc_row(layout: _Layout, context: _Context, query: Sequence[int] | None, spans: Iterable[TokenSpan],
             segment: Sequence[int] | None = None) -> dict[str, Any]:
    """Inputs and start/end/span labels for document token spans (spans not wholly in the context are left out)."""
    row, start = _encode(layout, context, query, segment)
    starts = [0 if end > begin else IGNORE for begin, end in row["offset_mapping"]]
    ends = list(starts)
    positions = {(context.index(first), context.index(last)) for first, last in spans}
    span_labels = sorted((start + f, start + e) for f, e in positions if f is not None and e is not None)
    for first, last in span_labels:
        starts[first] = ends[last] = 1
    return {**row, "start_labels": starts, "end_labels": ends, "span_labels": [list(s) for s in span_labels]}


@dataclass
class _AlignedDocument:
    """A document tokenized once, with each entity's token span (outer bounds, snapped to tokens)."""

    doc: Document
    tokens: TokenizedText
    spans: dict[str, TokenSpan]

    @classmethod
    def of(cls, doc: Document, tokenizer: PreTrainedTokenizerBase) -> _AlignedDocument:
        tokens = tokenize_text(doc.text, tokenizer)
        spans = {}
        for key, entity in doc.entities.items():
            span = tokens.overlapping(entity.start, entity.end)
            if span is not None:
                spans[key] = span
        return cls(doc, tokens, spans)

    def in_window(self, window: Window, entities: Iterable[Entity]) -> list[tuple[Entity, TokenSpan]]:
        """The ``entities`` that lie inside ``window``, with their token spans."""
        return [(e, self.spans[e.id]) for e in entities if e.id in self.spans and window.contains(e.start, e.end)]


def _budget(max_length: int, *reserved: int) -> int:
    budget = max_length - sum(reserved)
    if budget < 1:
        raise ValueError(f"max_length {max_length} leaves no room for context after {sum(reserved)} reserved tokens")
    return budget


def _ids(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    return tokenizer(
        texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False
    )["input_ids"]


def build_concept_examples(
    documents: Iterable[Document],
    tokenizer: PreTrainedTokenizerBase,
    schema: TaskSchema,
    *,
    max_length: int = 512,
    prompt: Prompt = "hard",
    num_virtual_tokens: int = 0,
) -> list[ConceptRow]:
    """One MRC example per window x concept type of ``schema`` (windows with no gold span included)."""
    layout = _Layout(tokenizer, pair=prompt == "hard")
    queries = _ids(tokenizer, [c.query for c in schema.concepts]) if prompt == "hard" else [None] * len(schema.concepts)
    longest = max((len(q) for q in queries if q is not None), default=0)
    budget = _budget(max_length, num_virtual_tokens, layout.num_special, longest)
    rows: list[ConceptRow] = []
    for doc in documents:
        aligned = _AlignedDocument.of(doc, tokenizer)
        by_type = defaultdict(list)
        for entity in doc.entities.values():
            by_type[entity.type].append(entity)
        for window in pack_windows(document_units(doc, aligned.tokens, budget), budget):
            context = _context(aligned.tokens, window)
            for prompt_id, (concept, query) in enumerate(zip(schema.concepts, queries)):
                rows.append({
                    "example_id": f"{doc.doc_id}:{window.start}:{concept.name}",
                    "doc_id": doc.doc_id,
                    "type": concept.name,
                    "prompt_id": prompt_id,
                    **_mrc_row(
                        layout, context, query, [s for _, s in aligned.in_window(window, by_type[concept.name])]
                    ),
                })
    return rows


def _tails(doc: Document, schema: TaskSchema) -> dict[tuple[str, str], list[Entity]]:
    """(head entity id, relation type) -> tail entities; the head is the argument named by ``head_arg``."""
    tails = defaultdict(list)
    types = {r.name: r for r in schema.relations}
    for relation in doc.relations.values():
        rtype = types.get(relation.type)
        if rtype is None or relation.arg1 not in doc.entities or relation.arg2 not in doc.entities:
            continue
        head, tail = (relation.arg1, relation.arg2) if rtype.head_arg == "Arg1" else (relation.arg2, relation.arg1)
        tails[head, relation.type].append(doc.entities[tail])
    return tails


def _mention(doc: Document, entity: Entity) -> str:
    return " ".join(doc.text[start:end] for start, end in entity.spans)


def build_relation_examples(
    documents: Iterable[Document],
    tokenizer: PreTrainedTokenizerBase,
    schema: TaskSchema,
    *,
    max_length: int = 512,
    prompt: Prompt = "hard",
    num_virtual_tokens: int = 0,
    head_marking: HeadMarking = "markers",
    markers: tuple[str, str] = ("[", "]"),
    neighbours: int = 1,
) -> list[RelationRow]:
    """One MRC example per head entity x relation type whose ``heads`` hold the head's type.

    The context is the head's sentence widened by up to ``neighbours`` sentences on each side (within the
    budget), so tails in neighbouring sentences are found; tails outside it get no label. Hard prompts put
    the head mention in the query (``RelationType.format_query``). Soft prompts mark the head in the
    context: ``head_marking="markers"`` wraps its tokens in the ``markers`` strings, ``"segment"`` sets
    their token type id to 1 (only for tokenizers with token type ids).
    """
    layout = _Layout(tokenizer, pair=prompt == "hard")
    marker_ids: tuple[list[int], list[int]] = ([], [])
    if prompt == "soft" and head_marking == "markers":
        opening, closing = _ids(tokenizer, list(markers))
        marker_ids = (opening, closing)
    if prompt == "soft" and head_marking == "segment" and not layout.with_type_ids:
        raise ValueError("head_marking='segment' needs a tokenizer with token_type_ids; use 'markers'")
    reserved = num_virtual_tokens + layout.num_special + len(marker_ids[0]) + len(marker_ids[1])
    rows: list[RelationRow] = []
    for doc in documents:
        aligned = _AlignedDocument.of(doc, tokenizer)
        tails = _tails(doc, schema)
        questions = [
            (head, prompt_id, rtype)
            for head in doc.entities.values()
            if head.id in aligned.spans
            for prompt_id, rtype in enumerate(schema.relations, start=len(schema.concepts))
            if head.type in rtype.heads
        ]
        if not questions:
            continue
        queries: list[list[int] | None] = [None] * len(questions)
        if prompt == "hard":
            texts = [rtype.format_query(_mention(doc, head)) for head, _, rtype in questions]
            unique = sorted(set(texts))
            ids = dict(zip(unique, _ids(tokenizer, unique)))
            queries = [ids[text] for text in texts]
        longest = max(len(q or ()) for q in queries)
        units = document_units(doc, aligned.tokens, _budget(max_length, reserved, longest))
        for (head, prompt_id, rtype), query in zip(questions, queries):
            budget = _budget(max_length, reserved, len(query or ()))
            window = window_around(units, unit_index(units, head.start), budget, neighbours)
            head_span = aligned.spans[head.id]
            segment = None
            if prompt == "soft" and head_marking == "markers":
                context = _context(aligned.tokens, window, head_span, marker_ids)
            else:
                context = _context(aligned.tokens, window)
            if prompt == "soft" and head_marking == "segment":
                segment = [int(head_span[0] <= t <= head_span[1]) for t in range(window.token_start, window.token_end)]
            gold = [span for _, span in aligned.in_window(window, tails.get((head.id, rtype.name), []))]
            rows.append({
                "example_id": f"{doc.doc_id}:{window.start}:{rtype.name}:{head.id}",
                "doc_id": doc.doc_id,
                "type": rtype.name,
                "prompt_id": prompt_id,
                "head_id": head.id,
                "head_start": head.start,
                "head_end": head.end,
                **_mrc_row(layout, context, query, gold, segment),
            })
    return rows


def bio_label_names(concept_names: Sequence[str]) -> list[str]:
    """BIO label names: ``O`` then ``B-``/``I-`` for each concept, in order (label id = list index)."""
    if len(set(concept_names)) != len(concept_names):
        raise ValueError("concept names must be unique")
    return [OUTSIDE] + [f"{prefix}-{name}" for name in concept_names for prefix in ("B", "I")]


def build_bio_examples(
    documents: Iterable[Document],
    tokenizer: PreTrainedTokenizerBase,
    concept_names: Sequence[str],
    *,
    max_length: int = 512,
) -> list[BioRow]:
    """One BIO tagging example per window (no prompt); overlapping entities are tagged as :func:`bio_tags` says."""
    layout = _Layout(tokenizer, pair=False)
    label_ids = {name: i for i, name in enumerate(bio_label_names(concept_names))}
    budget = _budget(max_length, layout.num_special)
    rows: list[BioRow] = []
    for doc in documents:
        aligned = _AlignedDocument.of(doc, tokenizer)
        entities = [e for e in doc.entities.values() if f"B-{e.type}" in label_ids]
        for window in pack_windows(document_units(doc, aligned.tokens, budget), budget):
            row, start = _encode(layout, _context(aligned.tokens, window), None)
            spans = [
                (first - window.token_start, last - window.token_start, e.type)
                for e, (first, last) in aligned.in_window(window, entities)
            ]
            labels = [IGNORE] * len(row["input_ids"])
            labels[start : start + window.num_tokens] = [label_ids[t] for t in bio_tags(window.num_tokens, spans)]
            rows.append({"example_id": f"{doc.doc_id}:{window.start}", "doc_id": doc.doc_id, **row, "labels": labels})
    return rows


def to_dataset(rows: Sequence[dict[str, Any]]) -> Dataset:
    """A ``datasets.Dataset`` of example rows (columns as listed in this module's docstring)."""
    from datasets import Dataset

    return Dataset.from_list(list(rows))
