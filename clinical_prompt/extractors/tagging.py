"""The no-prompt fine-tuning baseline (strategy ``finetune``): one encoder, a BIO tagging head for concepts and a
relation classifier over marked entity pairs, end to end.

Concepts: the windows of :func:`~clinical_prompt.corpus.build_bio_examples`, one ``O`` / ``B-X`` / ``I-X`` label per
token, decoded back to document character spans through each row's ``offset_mapping`` and widened to whole words
(a tag that stops inside a word would otherwise cut it).

Relations: one row per candidate pair, a head entity (type in ``RelationType.heads``) and a tail entity (type in
``tails`` of the same relation type) inside the head's sentence widened by ``neighbours`` sentences on each side, the
context the MRC relation builder reads. Both mentions are wrapped in typed punctuation markers (Zhou and Chen 2022,
"An Improved Baseline for Sentence-level Relation Extraction"): ``@ * drug * aspirin @`` around the head,
``# ^ dosage ^ 10 mg #`` around the tail; :class:`~clinical_prompt.heads.PairClassifierHead` reads the states at the
opening ``@`` and ``#`` and picks ``no_relation`` or a relation type. Plain-text markers leave the tokenizer and the
embedding table as they are, so any encoder works and the saved backbone is a stock checkpoint. Training keeps every
positive pair and at most ``negative_ratio`` negatives per positive (a seeded draw). At extraction the pairs come from
the predicted entities, and only ``no_relation`` and the relation types that fit the pair's types can win.

Rows of both kinds have the same keys, so one dataset holds both and a batch may mix them (the training loop draws
rows at random): ``example_id``, ``doc_id``, ``task`` (``"concept"`` or ``"relation"``), ``window_start``,
``window_end``, ``input_ids``, ``attention_mask``, ``token_type_ids`` (where the tokenizer uses them),
``offset_mapping`` (document characters, ``[0, 0]`` for special and marker tokens), ``labels`` (BIO label ids; all
-100 in relation rows), ``head_id`` / ``tail_id`` (``""`` in concept rows), ``head_marker`` / ``tail_marker``
(positions of the opening markers; 0 in concept rows) and ``relation_label`` (index into :attr:`relation_labels`;
-100 in concept rows). One encoder pass serves a mixed batch; the loss is the mean tagging loss over the concept
rows' tokens plus the mean relation loss over the relation rows, each term present when the batch holds its kind.
"""
from __future__ import annotations

import math
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from clinical_prompt.atomic import write_bytes, write_json
from clinical_prompt.backbone import DEFAULT_BACKBONE, load_backbone, load_tokenizer, public_model_id
from clinical_prompt.brat import Document, Entity
from clinical_prompt.corpus import bio_label_names, build_bio_examples, token_span_to_char_span, tokenize_text
from clinical_prompt.corpus.alignment import TokenizedText, TokenSpan, snap_to_words
from clinical_prompt.corpus.windows import Window, document_units, unit_index, window_around
from clinical_prompt.extractors.base import (
    DocumentPredictions,
    Extractor,
    ExtractorFormatError,
    length_batches,
    pad_encoder_inputs,
    pad_rows,
    read_saved_meta,
    save_backbone,
)
from clinical_prompt.heads import IGNORE_INDEX, NO_RELATION, PairClassifierHead, TaggingHead, decode_bio, pair_labels
from clinical_prompt.layout import (
    BACKBONE_DIR,
    EXTRACTOR_FILE,
    HEADS_FILE,
    LABELS_FILE,
    SCHEMA_FILE,
    read_json,
    read_safetensors,
    saved_backbone,
)
from clinical_prompt.schema import TaskSchema
from clinical_prompt.training import default_param_groups

KIND = "tagging"
HEADS = ("tagging_head", "pair_head")
HEAD_MARKERS = ("@ * {type} *", "@")
TAIL_MARKERS = ("# ^ {type} ^", "#")
CONCEPT, RELATION = "concept", "relation"


@dataclass
class TaggingExtractorOutput:
    """``loss`` (``None`` without labels), ``tag_logits`` ``[concept rows, T, BIO labels]`` and ``relation_logits``
    ``[relation rows, relation labels]``, in the batch's row order within each kind (``None`` when it has none)."""

    loss: Tensor | None
    tag_logits: Tensor | None
    relation_logits: Tensor | None


class _Markers:
    """Token ids of the typed entity markers and of the special tokens around one sequence."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, concept_names: Sequence[str]) -> None:
        def ids(templates: tuple[str, str], name: str) -> tuple[list[int], list[int]]:
            texts = [template.format(type=name) for template in templates]
            opening, closing = tokenizer(texts, add_special_tokens=False)["input_ids"]
            return opening, closing

        self.head = {name: ids(HEAD_MARKERS, name) for name in concept_names}
        self.tail = {name: ids(TAIL_MARKERS, name) for name in concept_names}
        probe = tokenizer("a")
        inside = [i for i, sequence in enumerate(probe.sequence_ids()) if sequence == 0]
        self.prefix = probe["input_ids"][: inside[0]]
        self.suffix = probe["input_ids"][inside[-1] + 1 :]
        self.with_type_ids = "token_type_ids" in tokenizer.model_input_names
        self.reserved = (len(self.prefix) + len(self.suffix) + max(len(o) + len(c) for o, c in self.head.values())
                         + max(len(o) + len(c) for o, c in self.tail.values()))


def _gold_pairs(doc: Document, schema: TaskSchema) -> dict[tuple[str, str], str]:
    """(head entity id, tail entity id) -> relation type, for the document's schema relations."""
    types = {r.name: r for r in schema.relations}
    pairs = {}
    for relation in doc.relations.values():
        rtype = types.get(relation.type)
        if rtype is not None:
            head_tail = (relation.arg1, relation.arg2) if rtype.head_arg == "Arg1" else (relation.arg2, relation.arg1)
            pairs[head_tail] = relation.type
    return pairs


def _pair_row(doc: Document, tokens: TokenizedText, window: Window, markers: _Markers,
              head: tuple[Entity, TokenSpan], tail: tuple[Entity, TokenSpan], label: int) -> dict[str, Any]:
    """One relation row: the window's tokens with both mentions wrapped in their typed markers."""
    begin = window.token_start
    ids = list(tokens.input_ids[begin : window.token_end])
    offsets = list(tokens.offsets[begin : window.token_end])
    marks = sorted([(head[1], markers.head[head[0].type], "head"), (tail[1], markers.tail[tail[0].type], "tail")])
    input_ids, offset_mapping, positions, cursor = list(markers.prefix), [(0, 0)] * len(markers.prefix), {}, 0
    for (first, last), (opening, closing), role in marks:
        first, last = first - begin, last + 1 - begin
        input_ids += ids[cursor:first]
        offset_mapping += offsets[cursor:first]
        positions[role] = len(input_ids)
        input_ids += opening + ids[first:last] + closing
        offset_mapping += [(0, 0)] * len(opening) + offsets[first:last] + [(0, 0)] * len(closing)
        cursor = last
    input_ids += ids[cursor:] + markers.suffix
    offset_mapping += offsets[cursor:] + [(0, 0)] * len(markers.suffix)
    row: dict[str, Any] = {
        "example_id": f"{doc.doc_id}:{head[0].id}:{tail[0].id}", "doc_id": doc.doc_id, "task": RELATION,
        "window_start": window.start, "window_end": window.end,
        "input_ids": input_ids, "attention_mask": [1] * len(input_ids),
    }
    if markers.with_type_ids:
        row["token_type_ids"] = [0] * len(input_ids)
    return {**row, "offset_mapping": offset_mapping, "labels": [IGNORE_INDEX] * len(input_ids),
            "head_id": head[0].id, "tail_id": tail[0].id, "head_marker": positions["head"],
            "tail_marker": positions["tail"], "relation_label": label}


def build_pair_examples(
    documents: Iterable[Document],
    tokenizer: PreTrainedTokenizerBase,
    schema: TaskSchema,
    *,
    max_length: int = 512,
    neighbours: int = 1,
) -> list[dict[str, Any]]:
    """One relation row per candidate (head, tail) pair of each document (see the module docstring).

    ``relation_label`` indexes ``pair_labels(schema.relation_names)``: the gold relation type, or 0 (no relation).
    Pairs whose mentions share a token, and entities with no token, are left out.
    """
    labels = {name: i for i, name in enumerate(pair_labels(schema.relation_names))}
    kinds = {(h, t) for r in schema.relations for h in r.heads for t in r.tails}
    head_types = {h for h, _ in kinds}
    markers = _Markers(tokenizer, schema.concept_names)
    budget = max_length - markers.reserved
    if budget < 1:
        raise ValueError(f"max_length {max_length} leaves no room for context after {markers.reserved} marker tokens")
    rows = []
    for doc in documents:
        tokens = tokenize_text(doc.text, tokenizer)
        aligned = [(e, span) for e in doc.entities.values() if (span := tokens.overlapping(e.start, e.end))]
        heads = [pair for pair in aligned if pair[0].type in head_types]
        if not heads:
            continue
        gold = _gold_pairs(doc, schema)
        units = document_units(doc, tokens, budget)
        for head in heads:
            window = window_around(units, unit_index(units, head[0].start), budget, neighbours)
            inside = {e.id for e, (first, last) in aligned if window.token_start <= first and last < window.token_end}
            if head[0].id not in inside:
                continue
            for tail in aligned:
                if ((head[0].type, tail[0].type) in kinds and tail[0].id in inside
                        and (head[1][1] < tail[1][0] or tail[1][1] < head[1][0])):
                    label = labels[gold.get((head[0].id, tail[0].id), NO_RELATION)]
                    rows.append(_pair_row(doc, tokens, window, markers, head, tail, label))
    return rows


def _cap_negatives(rows: list[dict[str, Any]], ratio: float | None, seed: int) -> list[dict[str, Any]]:
    """Every positive row and a seeded draw of at most ``ratio`` negatives per positive, in their order."""
    if ratio is None:
        return rows
    negatives = [i for i, row in enumerate(rows) if row["relation_label"] == 0]
    keep = min(len(negatives), math.ceil(ratio * (len(rows) - len(negatives))))
    dropped = set(negatives) - set(random.Random(seed).sample(negatives, keep))
    return [row for i, row in enumerate(rows) if i not in dropped]


def decode_concept_rows(
    rows: Sequence[dict[str, Any]],
    predictions: Sequence[Sequence[int]],
    label_names: Sequence[str],
    confidences: Sequence[Sequence[float]] | None = None,
) -> list[tuple[str, str, int, int, float | None]]:
    """``(doc_id, type, start, end, score)`` document char spans from predicted BIO label ids, one sequence per row;
    the score is the mean over the span's tokens of ``confidences`` (each token's probability of its predicted
    label), ``None`` without them.

    Tokens outside the context (``offset_mapping`` ``[0, 0]``) and padding are skipped.
    """
    spans = []
    for index, (row, predicted) in enumerate(zip(rows, predictions)):
        offsets = row["offset_mapping"]
        ids = [label if end > start else IGNORE_INDEX for label, (start, end) in zip(predicted, offsets)]
        for type_name, first, last in decode_bio(ids, label_names):
            score = None if confidences is None else sum(confidences[index][first:last + 1]) / (last + 1 - first)
            spans.append((row["doc_id"], type_name, *token_span_to_char_span(offsets, first, last), score))
    return spans


@dataclass(frozen=True)
class TaggingSettings:
    """Settings of a :class:`TaggingExtractor`, saved in its ``extractor.json``.

    ``max_length``: tokens per row, special and marker tokens included; ``neighbours``: sentences on each side of the
    head's sentence where tails are looked for; ``negative_ratio``: negative pairs kept per positive pair in training
    (``None``: all); ``seed``: of that draw; ``dropout``: of both heads.
    """

    max_length: int = 256
    neighbours: int = 1
    negative_ratio: float | None = 5.0
    seed: int = 0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.max_length < 1 or self.neighbours < 0:
            raise ValueError(f"max_length must be >= 1 and neighbours >= 0, got {self.max_length}, {self.neighbours}")
        if self.negative_ratio is not None and self.negative_ratio < 0:
            raise ValueError(f"negative_ratio must be >= 0 or None, got {self.negative_ratio}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class TaggingExtractor(Extractor):
    """Fine-tuned encoder with a BIO tagging head (concepts) and a marked-pair relation classifier (relations).

    ``backbone``: a hub id, a local model folder or ``"minilm"``; ``settings``: :class:`TaggingSettings` fields.
    ``use_safetensors=True`` never reads pickled backbone weights.
    """

    strategy = "finetune"

    def __init__(self, schema: TaskSchema, backbone: str | os.PathLike = DEFAULT_BACKBONE, *,
                 use_safetensors: bool | None = None, **settings: Any) -> None:
        super().__init__()
        self.settings = TaggingSettings(**settings)
        self.schema = schema
        self.tokenizer = load_tokenizer(backbone)
        self.encoder = load_backbone(backbone, use_safetensors=use_safetensors)
        positions = getattr(self.encoder.config, "max_position_embeddings", self.settings.max_length)
        if self.settings.max_length > positions:
            raise ValueError(f"max_length {self.settings.max_length} exceeds the backbone's {positions} positions")
        self.backbone_id = public_model_id(backbone)
        self.bio_labels = bio_label_names(schema.concept_names)
        self.relation_labels = pair_labels(schema.relation_names)
        hidden_size = self.encoder.config.hidden_size
        self.tagging_head = TaggingHead(hidden_size, len(self.bio_labels), self.settings.dropout)
        self.pair_head = PairClassifierHead(hidden_size, len(self.relation_labels), self.settings.dropout)

    def concept_rows(self, documents: Sequence[Document]) -> list[dict[str, Any]]:
        """BIO rows (``task="concept"``) of ``documents``, with the relation keys at their neutral values."""
        rows = build_bio_examples(documents, self.tokenizer, self.schema.concept_names,
                                  max_length=self.settings.max_length)
        neutral = {"task": CONCEPT, "head_id": "", "tail_id": "", "head_marker": 0, "tail_marker": 0,
                   "relation_label": IGNORE_INDEX}
        return [{**row, **neutral} for row in rows]

    def relation_rows(self, documents: Sequence[Document]) -> list[dict[str, Any]]:
        """Relation rows (``task="relation"``) of every candidate pair of ``documents``' entities."""
        if not self.schema.relations:
            return []
        return build_pair_examples(documents, self.tokenizer, self.schema, max_length=self.settings.max_length,
                                   neighbours=self.settings.neighbours)

    def training_rows(self, documents: Sequence[Document]) -> list[dict]:
        """Concept rows, then relation rows with negatives capped by ``negative_ratio``."""
        pairs = _cap_negatives(self.relation_rows(documents), self.settings.negative_ratio, self.settings.seed)
        return self.concept_rows(documents) + pairs

    def collate(self, rows: Sequence[dict]) -> dict[str, Tensor]:
        """Right-padded tensors of rows of either kind; ``is_relation`` tells the kinds apart."""
        batch = pad_encoder_inputs(rows, self.tokenizer.pad_token_id or 0)
        return {
            **batch,
            "labels": pad_rows(rows, "labels", IGNORE_INDEX, batch["input_ids"].shape[1]),
            "is_relation": torch.tensor([row["task"] == RELATION for row in rows]),
            "head_marker": torch.tensor([row["head_marker"] for row in rows]),
            "tail_marker": torch.tensor([row["tail_marker"] for row in rows]),
            "relation_labels": torch.tensor([row["relation_label"] for row in rows]),
        }

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        is_relation: Tensor | None = None,
        head_marker: Tensor | None = None,
        tail_marker: Tensor | None = None,
        relation_labels: Tensor | None = None,
    ) -> TaggingExtractorOutput:
        """Tag logits of the concept rows and relation logits of the relation rows (all rows are concept rows when
        ``is_relation`` is not given); the loss sums the kinds' mean losses where labels are given."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**inputs).last_hidden_state
        if is_relation is None:
            is_relation = torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)
        concept = ~is_relation
        losses, tag_logits, relation_logits = [], None, None
        if concept.any():
            tagged = self.tagging_head(hidden[concept], None if labels is None else labels[concept])
            tag_logits = tagged.logits
            losses += [tagged.loss] if tagged.loss is not None else []
        if is_relation.any():
            classified = self.pair_head(hidden[is_relation], head_marker[is_relation], tail_marker[is_relation],
                                        None if relation_labels is None else relation_labels[is_relation])
            relation_logits = classified.logits
            losses += [classified.loss] if classified.loss is not None else []
        return TaggingExtractorOutput(sum(losses) if losses else None, tag_logits, relation_logits)

    def param_groups(self, backbone_lr: float, head_lr: float, prompt_lr: float, weight_decay: float) -> list[dict]:
        """The encoder at ``backbone_lr``, both heads at ``head_lr`` (no prompts: ``prompt_lr`` is unused); biases
        and normalization weights without weight decay."""
        return [
            *default_param_groups(self.encoder, learning_rate=backbone_lr, weight_decay=weight_decay),
            *default_param_groups(self.tagging_head, learning_rate=head_lr, weight_decay=weight_decay),
            *default_param_groups(self.pair_head, learning_rate=head_lr, weight_decay=weight_decay),
        ]

    def _outputs(self, rows: Sequence[dict[str, Any]], batch_size: int) -> list[Tensor]:
        """Per row, its tag logits (concept rows) or relation logits (relation rows), in row order."""
        outputs: list[Tensor] = [torch.empty(0)] * len(rows)
        for indices in length_batches(rows, batch_size):
            batch = self.collate([rows[i] for i in indices])
            del batch["labels"], batch["relation_labels"]
            output = self(**{key: value.to(self.device) for key, value in batch.items()})
            logits = output.relation_logits if output.tag_logits is None else output.tag_logits
            for i, row_logits in zip(indices, logits.float().cpu()):
                outputs[i] = row_logits
        return outputs

    @torch.no_grad()
    def predictions(self, documents: Sequence[Document], *, batch_size: int = 32) -> list[DocumentPredictions]:
        """Tagged concepts, then relations among them (see the module docstring). An entity's score is the mean
        probability of its tokens' predicted tags, a relation's the probability of its type among those that fit."""
        doc_ids = [doc.doc_id for doc in documents]
        if len(set(doc_ids)) != len(doc_ids):
            raise ValueError("documents must have distinct doc_ids")
        was_training = self.training
        self.eval()
        try:
            predictions = {doc.doc_id: DocumentPredictions(Document(doc.doc_id, doc.text)) for doc in documents}
            rows = self.concept_rows([prediction.source for prediction in predictions.values()])
            best = [logits.softmax(-1).max(-1) for logits in self._outputs(rows, batch_size)]
            tags, confidences = [b.indices.tolist() for b in best], [b.values.tolist() for b in best]
            for doc_id, type_name, start, end, score in decode_concept_rows(rows, tags, self.bio_labels, confidences):
                text = predictions[doc_id].source.text
                predictions[doc_id].add_entity(type_name, *snap_to_words(text, start, end), score)
            found = {doc_id: prediction.document() for doc_id, prediction in predictions.items()}
            pairs = self.relation_rows(list(found.values()))
            for row, logits in zip(pairs, self._outputs(pairs, batch_size)):
                entities = found[row["doc_id"]].entities
                head, tail = entities[row["head_id"]], entities[row["tail_id"]]
                allowed = [0] + [i for i, rtype in enumerate(self.schema.relations, start=1)
                                 if head.type in rtype.heads and tail.type in rtype.tails]
                probabilities = logits[allowed].softmax(-1)
                choice = int(probabilities.argmax())
                if allowed[choice]:
                    predictions[row["doc_id"]].add_relation(
                        self.schema.relations[allowed[choice] - 1], (head.type, head.start, head.end),
                        (tail.type, tail.start, tail.end), float(probabilities[choice]))
            return [predictions[doc_id] for doc_id in doc_ids]
        finally:
            self.train(was_training)

    def save_pretrained(self, directory: str | os.PathLike, *, base_model_id: str | None = None) -> None:
        """Write ``backbone/`` (the whole trained encoder and its tokenizer), ``heads.safetensors``, ``schema.json``,
        ``labels.json`` and, last, ``extractor.json``; each file is written atomically.

        ``base_model_id`` (a hub id) is recorded as the model the backbone was trained from; by default the backbone
        name the extractor was created from, unless that was a local path.
        """
        if base_model_id is not None and public_model_id(base_model_id) is None:
            raise ValueError(f"base_model_id={base_model_id!r} is not a hub id; local paths are not recorded")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_backbone(self.encoder, self.tokenizer, directory / BACKBONE_DIR)
        heads = {f"{name}.{k}": v.detach().cpu().contiguous() for name in HEADS
                 for k, v in getattr(self, name).state_dict().items()}
        write_bytes(directory / HEADS_FILE, safetensors.torch.save(heads, metadata={"format": "pt"}))
        write_json(directory / SCHEMA_FILE, self.schema.to_dict())
        write_json(directory / LABELS_FILE, {"bio": self.bio_labels, "relation": self.relation_labels})
        write_json(directory / EXTRACTOR_FILE, {"kind": KIND, "strategy": self.strategy,
                                                "settings": asdict(self.settings),
                                                "backbone": base_model_id or self.backbone_id})

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, backbone: str | None = None) -> TaggingExtractor:
        """Load a directory written by :meth:`save_pretrained`, its files read as untrusted (see
        :mod:`clinical_prompt.layout`). ``backbone`` is not used: the directory holds the whole trained encoder."""
        directory = Path(directory)
        meta, _, settings = read_saved_meta(directory, KIND, TaggingSettings)
        schema = TaskSchema.from_dict(read_json(directory / SCHEMA_FILE), source=str(directory / SCHEMA_FILE))
        extractor = cls(schema, saved_backbone(directory), use_safetensors=True, **asdict(settings))
        extractor.backbone_id = meta.get("backbone")
        if read_json(directory / LABELS_FILE) != {"bio": extractor.bio_labels, "relation": extractor.relation_labels}:
            raise ExtractorFormatError(f"{directory / LABELS_FILE}: labels differ from {SCHEMA_FILE}")
        expected = {f"{name}.{key}": value.shape
                    for name in HEADS for key, value in getattr(extractor, name).state_dict().items()}
        heads = read_safetensors(directory / HEADS_FILE, expected)
        for name in HEADS:
            getattr(extractor, name).load_state_dict(
                {k.removeprefix(f"{name}."): v for k, v in heads.items() if k.startswith(f"{name}.")})
        return extractor
