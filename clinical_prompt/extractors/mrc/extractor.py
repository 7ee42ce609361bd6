"""MRC extraction (Peng et al. 2024): concepts and relations as span questions to one shared span head.

Strategies served: ``hard-prompt`` (backbone + :class:`~clinical_prompt.heads.span.SpanHead`, the rows read
``[CLS] query [SEP] context [SEP]``), ``soft-prompt`` and ``soft-prompt-frozen`` (a
:class:`~clinical_prompt.prompts.PromptedEncoder` with one prompt block per concept type and per relation type, in the
corpus layer's ``prompt_id`` order; deep prompts of 16 virtual tokens by default, seeded from each type's hard query;
frozen: only the prompts and the head train).

Questions: one per window x concept type; one per head entity x relation type whose ``heads`` hold the head's type,
the head mention in the query (hard) or marked in the context (soft: ``head_marking="markers"`` wraps it in ``[``
``]``, ``"segment"`` gives its tokens token type 1); spans start and end only on word boundaries (see
:mod:`clinical_prompt.extractors.mrc.questions`).

End-to-end :meth:`MrcExtractor.extract`: concept questions over the bare text give the entities; each predicted
entity then asks the relation questions of its type, and each decoded tail becomes a relation to the predicted
entity of a tail type with the same span, in the order of ``RelationType.tails``. A tail that matches no predicted
entity is added as a new entity of the relation type's first tail type: the relation question was asked about this
very head, so its answer is kept rather than lost (for relation types with several tail types that first type may
be wrong). Entities and relations are de-duplicated.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import Tensor, nn
from tqdm.auto import tqdm

from clinical_prompt.atomic import write_bytes, write_json
from clinical_prompt.backbone import load_backbone, load_tokenizer, public_model_id
from clinical_prompt.brat import Document
from clinical_prompt.corpus import (
    ConceptRow,
    build_concept_examples,
    build_relation_examples,
    is_relation_row,
    token_span_to_char_span,
)
from clinical_prompt.evaluation import evaluate_documents
from clinical_prompt.extractors.base import (
    DocumentPredictions,
    EntityKey,
    Extractor,
    ExtractorFormatError,
    length_batches,
    pad_encoder_inputs,
    pad_rows,
    save_backbone,
)
from clinical_prompt.extractors.mrc.questions import (
    RelationQuestion,
    mrc_prompt_config,
    prompt_block_names,
    query_types,
    sample_negatives,
    with_word_masks,
)
from clinical_prompt.extractors.mrc.saved import SavedExtractor, read_saved
from clinical_prompt.extractors.mrc.settings import KIND, THRESHOLD_GRID, MrcSettings, ScoredSpan, span_head
from clinical_prompt.heads.span import SpanHead, SpanHeadOutput, decode_spans, pad_span_labels
from clinical_prompt.layout import (
    BACKBONE_DIR,
    EXTRACTOR_FILE,
    HEADS_FILE,
    HEADS_PREFIX,
    LABELS_FILE,
    SCHEMA_FILE,
    read_safetensors,
    saved_backbone,
)
from clinical_prompt.prompts import ClinicalPromptConfig, PromptedEncoder
from clinical_prompt.schema import TaskSchema
from clinical_prompt.strategies import Strategy, get_strategy
from clinical_prompt.training import default_param_groups


class HardPromptEncoder(nn.Module):
    """A backbone and its span head behind the interface of :class:`PromptedEncoder` (``backbone``, ``heads``)."""

    def __init__(self, backbone: nn.Module, heads: SpanHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = heads

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None,
        block_ids: Tensor | None = None,
    ) -> Tensor:
        """Last hidden states ``[B, T, H]``; hard prompts have no prompt blocks, so ``block_ids`` must be None."""
        if block_ids is not None:
            raise ValueError("a hard-prompt encoder has no prompt blocks; block_ids must be None")
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        return self.backbone(**inputs).last_hidden_state


def predictions_for(documents: Sequence[Document]) -> dict[str, DocumentPredictions]:
    """Empty predictions of each document by ``doc_id``, in input order; ``ValueError`` for a repeated id."""
    predictions: dict[str, DocumentPredictions] = {}
    for doc in documents:
        if doc.doc_id in predictions:
            raise ValueError(f"document id {doc.doc_id!r} occurs more than once")
        predictions[doc.doc_id] = DocumentPredictions(doc)
    return predictions


def predictions_with_entities(documents: Sequence[Document]) -> dict[str, DocumentPredictions]:
    """Predictions of each document by ``doc_id`` holding its given entities (discontinuous ones collapsed to
    outer bounds) and nothing else."""
    predictions = predictions_for(documents)
    for doc in documents:
        for entity in doc.entities.values():
            predictions[doc.doc_id].add_entity(entity.type, entity.start, entity.end)
    return predictions


class MrcExtractor(Extractor):
    """Concept and relation extraction by MRC questions; build one with :meth:`create` or :meth:`from_pretrained`.

    ``encoder`` is a :class:`PromptedEncoder` (soft prompts) or a :class:`HardPromptEncoder`; its ``heads`` is the
    span head shared by concept and relation questions.
    """

    def __init__(
        self,
        schema: TaskSchema,
        tokenizer: Any,
        encoder: PromptedEncoder | HardPromptEncoder,
        *,
        strategy: str,
        settings: MrcSettings | None = None,
        backbone_id: str | None = None,
    ) -> None:
        super().__init__()
        spec = get_strategy(strategy)
        if spec.input_format == "bio":
            raise ValueError(f"strategy {spec.name!r} is served by the tagging extractor, not MRC")
        if spec.uses_soft_prompts != isinstance(encoder, PromptedEncoder):
            needed = "PromptedEncoder" if spec.uses_soft_prompts else "HardPromptEncoder"
            raise ValueError(f"strategy {spec.name!r} needs a {needed}")
        if not isinstance(encoder.heads, SpanHead):
            raise ValueError("the encoder's heads must be the SpanHead")
        settings = settings or MrcSettings()
        if not spec.uses_soft_prompts and settings.prompt_sharing != "per-type":
            raise ValueError(f"strategy {spec.name!r} has no prompt blocks to share")
        blocks = prompt_block_names(schema, settings.prompt_sharing)
        if spec.uses_soft_prompts and encoder.config.prompt_blocks != blocks:
            raise ValueError(f"prompt blocks {encoder.config.prompt_blocks} are not the schema's {blocks}")
        self.schema = schema
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.strategy = spec.name
        self.settings = settings
        self.backbone_id = backbone_id
        if spec.freeze_backbone:
            encoder.backbone.requires_grad_(False)

    @classmethod
    def create(
        cls,
        schema: TaskSchema,
        backbone: str | os.PathLike = "minilm",
        *,
        strategy: str = "soft-prompt",
        prompt_config: ClinicalPromptConfig | None = None,
        quantization: str | None = None,
        **settings: Any,
    ) -> MrcExtractor:
        """A new extractor on a pretrained ``backbone`` (hub id, folder or ``"minilm"``); ``settings`` are
        :class:`MrcSettings` fields. ``prompt_config`` (soft prompts only) gets the schema's prompt blocks.
        ``quantization`` (``"8bit"`` or ``"4bit"``, frozen strategies only) loads the backbone through bitsandbytes;
        the adapter still loads onto the full-precision base."""
        spec = get_strategy(strategy)
        if quantization is not None and not spec.freeze_backbone:
            raise ValueError(f"quantization needs a frozen backbone; strategy {spec.name!r} trains it")
        mrc_settings = MrcSettings(**settings)
        model = load_backbone(backbone, quantization=quantization)
        tokenizer = load_tokenizer(backbone)
        head = span_head(model.config.hidden_size, mrc_settings)
        if spec.uses_soft_prompts:
            config = mrc_prompt_config(schema, prompt_config, mrc_settings.prompt_sharing)
            encoder = PromptedEncoder(model, config, head, tokenizer=tokenizer)
        elif prompt_config is not None:
            raise ValueError(f"strategy {spec.name!r} uses no soft prompt; leave prompt_config unset")
        else:
            encoder = HardPromptEncoder(model, head)
        return cls(schema, tokenizer, encoder, strategy=spec.name, settings=mrc_settings,
                   backbone_id=public_model_id(backbone))

    @property
    def spec(self) -> Strategy:
        return get_strategy(self.strategy)

    @property
    def shares_trunk(self) -> bool:
        return self.spec.uses_soft_prompts and self.encoder.config.prompt_start_layer > 0

    @property
    def span_head(self) -> SpanHead:
        return self.encoder.heads

    # --- rows and batches -------------------------------------------------------------------------------------

    def _build_options(self) -> dict[str, Any]:
        soft = self.spec.uses_soft_prompts
        return {
            "max_length": self.settings.max_length,
            "prompt": "soft" if soft and self.settings.prompt_sharing == "per-type" else "hard",
            "num_virtual_tokens": self.encoder.config.num_virtual_tokens if soft else 0,
        }

    def _concept_rows(self, documents: Sequence[Document]) -> list[dict]:
        rows = build_concept_examples(documents, self.tokenizer, self.schema, **self._build_options())
        return with_word_masks(rows, documents)

    def _relation_rows(self, documents: Sequence[Document]) -> list[dict]:
        if not self.schema.relations:
            return []
        rows = build_relation_examples(
            documents, self.tokenizer, self.schema, head_marking=self.settings.head_marking,
            neighbours=self.settings.neighbours, **self._build_options(),
        )
        return with_word_masks(rows, documents)

    def training_rows(self, documents: Sequence[Document]) -> list[dict]:
        """Concept rows (every window x concept type) and relation rows (every gold head x fitting relation type).

        With ``settings.negative_ratio``, concept rows without a gold span and relation rows without a gold tail are
        sampled down, each kind on its own (see :func:`sample_negatives`): most windows hold no span of a rare type
        and most heads no tail of a given relation type, and those rows cost the most time.
        """
        kinds = [self._concept_rows(documents), self._relation_rows(documents)]
        if self.settings.negative_ratio is not None:
            kinds = [sample_negatives(rows, self.settings.negative_ratio) for rows in kinds]
        return kinds[0] + kinds[1]

    def batch_inputs(self, rows: Sequence[dict]) -> dict[str, Tensor]:
        """Padded inputs, word and context masks and prompt block ids (soft) of rows, without labels."""
        batch = pad_encoder_inputs(rows, self.tokenizer.pad_token_id)
        width = batch["input_ids"].shape[1]
        batch["word_start_mask"] = pad_rows(rows, "word_start_mask", 0, width)
        batch["word_end_mask"] = pad_rows(rows, "word_end_mask", 0, width)
        batch["context_mask"] = torch.tensor(
            [[int(end > start) for start, end in row["offset_mapping"]] + [0] * (width - len(row["input_ids"]))
             for row in rows], dtype=torch.long,
        )
        if self.spec.uses_soft_prompts:
            shared = self.settings.prompt_sharing == "shared"
            batch["block_ids"] = torch.tensor([0 if shared else row["prompt_id"] for row in rows], dtype=torch.long)
        return batch

    def collate(self, rows: Sequence[dict]) -> dict[str, Tensor]:
        """Padded inputs, word and context masks, prompt block ids (soft) and the start/end/span labels."""
        batch = self.batch_inputs(rows)
        width = batch["input_ids"].shape[1]
        batch["start_labels"] = (pad_rows(rows, "start_labels", 0, width) == 1).long()
        batch["end_labels"] = (pad_rows(rows, "end_labels", 0, width) == 1).long()
        batch["span_labels"] = pad_span_labels([[tuple(span) for span in row["span_labels"]] for row in rows])
        return batch

    # --- model ------------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        context_mask: Tensor,
        word_start_mask: Tensor,
        word_end_mask: Tensor,
        token_type_ids: Tensor | None = None,
        block_ids: Tensor | None = None,
        start_labels: Tensor | None = None,
        end_labels: Tensor | None = None,
        span_labels: Tensor | None = None,
    ) -> SpanHeadOutput:
        """Span head scores of every token (and the loss when labels are given)."""
        hidden = self.encoder(input_ids, attention_mask, token_type_ids=token_type_ids, block_ids=block_ids)
        return self.span_head(
            hidden, context_mask, word_start_mask, word_end_mask, start_labels, end_labels, span_labels
        )

    def param_groups(self, backbone_lr: float, head_lr: float, prompt_lr: float, weight_decay: float) -> list[dict]:
        """AdamW groups: backbone (when trained), span head and prompts (soft), each split into decay / no decay."""
        parts = [(self.encoder.backbone, backbone_lr), (self.span_head, head_lr)]
        if self.spec.uses_soft_prompts:
            parts.append((self.encoder.prompts, prompt_lr))
        return [
            group
            for module, rate in parts
            for group in default_param_groups(module, learning_rate=rate, weight_decay=weight_decay)
            if group["params"]
        ]

    # --- inference --------------------------------------------------------------------------------------------

    def answer_spans(self, rows: Sequence[dict], hidden: Tensor, inputs: dict[str, Tensor]) -> list[list[ScoredSpan]]:
        """Document character spans ``(start, end, score)`` answering each row, from its encoder states ``hidden``
        (``[len(rows), T, H]``): the span head, then decoding with this extractor's settings (relation rows with
        ``relation_decoding`` at ``relation_threshold``).
        ``inputs`` holds the rows' context and word masks (:meth:`batch_inputs`)."""
        output = self.span_head(hidden, *_masks(inputs))
        s = self.settings
        concept = (s.decoding, s.threshold)
        relation = (s.relation_decoding or s.decoding,
                    s.threshold if s.relation_threshold is None else s.relation_threshold)
        choices = [relation if is_relation_row(row) else concept for row in rows]
        decoded = {choice: self._char_spans(rows, output, inputs, *choice) for choice in set(choices)}
        return [decoded[choice][i] for i, choice in enumerate(choices)]

    def _char_spans(
        self, rows: Sequence[dict], output: SpanHeadOutput, inputs: dict[str, Tensor], mode: str, threshold: float
    ) -> list[list[ScoredSpan]]:
        """The span head's ``output`` for ``rows`` decoded in ``mode`` at ``threshold``, as scored document
        character spans."""
        s = self.settings
        decoded = decode_spans(output, *_masks(inputs), mode=mode, threshold=threshold, max_span_len=s.max_span_len)
        spans = [
            [(*token_span_to_char_span(row["offset_mapping"], first, last), score) for first, last, score in row_spans]
            for row, row_spans in zip(rows, decoded)
        ]
        if s.relation_tails == "entities":
            start_p, end_p = torch.sigmoid(output.start_logits.float()), torch.sigmoid(output.end_logits.float())
            for i, row in enumerate(rows):
                if is_relation_row(row):
                    spans[i] = [span for span in _scored_candidates(row, start_p[i], end_p[i]) if span[2] > threshold]
        return spans

    def _encoded(self, rows: Sequence[dict], batch_size: int) -> Iterator[tuple[list[int], Tensor, dict[str, Tensor]]]:
        """``(row indices, encoder states, inputs)`` of each batch of ``rows``, rows of similar length together and
        rows of the same text next to each other (late prompts run their lower layers once per distinct text)."""
        batches = length_batches(rows, batch_size, key=lambda i: (len(rows[i]["input_ids"]), rows[i]["input_ids"]))
        for indices in tqdm(batches, total=-(-len(rows) // batch_size), desc="extracting", unit="batch", leave=False):
            batch = self.batch_inputs([rows[i] for i in indices])
            inputs = {name: tensor.to(self.device) for name, tensor in batch.items()}
            hidden = self.encoder(
                inputs["input_ids"], inputs["attention_mask"], token_type_ids=inputs.get("token_type_ids"),
                block_ids=inputs.get("block_ids"),
            )
            yield indices, hidden, inputs

    def _decode(self, rows: Sequence[dict], batch_size: int) -> list[list[ScoredSpan]]:
        """Decoded, scored document char spans of each row."""
        spans: list[list[ScoredSpan]] = [[] for _ in rows]
        for indices, hidden, inputs in self._encoded(rows, batch_size):
            for i, row_spans in zip(indices, self.answer_spans([rows[i] for i in indices], hidden, inputs)):
                spans[i] = row_spans
        return spans

    def concept_questions(self, documents: Sequence[Document]) -> list[ConceptRow]:
        """Rows asking every concept question about the bare text of ``documents`` (their annotations are ignored)."""
        return self._concept_rows([Document(doc.doc_id, doc.text) for doc in documents])

    def relation_questions(self, predictions: Sequence[DocumentPredictions]) -> list[RelationQuestion]:
        """Rows asking the relation questions of every entity in ``predictions``; each keeps its head's key in
        ``head``."""
        if not self.schema.relations:
            return []
        heads = [p.document() for p in predictions]
        rows = self._relation_rows(heads)
        entities = {doc.doc_id: doc.entities for doc in heads}
        tails = {r.name: set(r.tails) for r in self.schema.relations}
        for row in rows:
            entity = entities[row["doc_id"]][row["head_id"]]
            row["head"] = (entity.type, entity.start, entity.end)
            row["candidates"] = [
                (e.start, e.end) for e in entities[row["doc_id"]].values()
                if e.type in tails[row["type"]] and e.id != entity.id
                and row["window_start"] <= e.start and e.end <= row["window_end"]
            ]
        return rows

    def add_answers(
        self,
        predictions: Mapping[str, DocumentPredictions],
        rows: Sequence[ConceptRow | RelationQuestion],
        spans: Sequence[list[ScoredSpan]],
    ) -> None:
        """Add the answer spans of concept rows as entities and those of relation rows as relations to their head.

        A relation answer becomes a relation to the predicted entity of a tail type with the same span, in the order
        of ``RelationType.tails``, else to a new entity of the first tail type.
        """
        relation_types = {r.name: r for r in self.schema.relations}
        for row, row_spans in zip(rows, spans):
            target = predictions[row["doc_id"]]
            if not is_relation_row(row):
                for start, end, score in row_spans:
                    target.add_entity(row["type"], start, end, score)
                continue
            head: EntityKey = row["head"]
            rtype = relation_types[row["type"]]
            for start, end, score in row_spans:
                if (start, end) == head[1:]:
                    continue
                tail = next((k for k in ((t, start, end) for t in rtype.tails) if target.has_entity(k)), None)
                tail = tail or target.add_entity(rtype.tails[0], start, end, score)
                if tail is not None:
                    target.add_relation(rtype, head, tail, score)

    def _answer(self, predictions: Mapping[str, DocumentPredictions], rows: list[dict], batch_size: int) -> None:
        self.add_answers(predictions, rows, self._decode(rows, batch_size))

    @torch.no_grad()
    def predictions(self, documents: Sequence[Document], *, batch_size: int = 32) -> list[DocumentPredictions]:
        """End to end: concepts from the text alone (annotations are ignored), then the relations of the predicted
        entities; ``batch_size`` rows per forward pass. A span's score is the smallest of its start, end and
        start-end match probabilities (:func:`~clinical_prompt.heads.span.decode_spans`), so it exceeds the
        threshold exactly where the span is kept; a relation scores as its tail's span in the relation question."""
        predictions = predictions_for(documents)
        training = self.training
        self.eval()
        try:
            self._answer(predictions, self.concept_questions(documents), batch_size)
            self._answer(predictions, self.relation_questions(list(predictions.values())), batch_size)
        finally:
            self.train(training)
        return list(predictions.values())

    @torch.no_grad()
    def calibrate(self, documents: Sequence[Document], *, batch_size: int = 32) -> dict[str, float | str]:
        """Set ``settings.decoding`` and ``settings.threshold`` to the decoding mode and value of
        :data:`THRESHOLD_GRID` with the best concept strict micro-F1 on gold ``documents`` and then, where the schema
        has relations, ``relation_decoding`` and ``relation_threshold`` to those with the best end-to-end relation
        strict micro-F1, asked about the concepts found with the settings just chosen, as :meth:`extract` asks them
        (ties: the mode already set, then the higher threshold). The modes tried are ``flat`` and ``scored``; a part
        set to ``nested`` (overlapping answers, a property of the annotation scheme) keeps it. Rows are encoded once
        and decoded every way.

        The start and end probabilities of a head trained for a few epochs stay under 0.5 on many gold spans (a few
        percent of the tokens are positive), so a threshold fitted on dev recovers recall that a fixed 0.5 loses.
        Nearest-end (``flat``) decoding cuts an answer at its first likely end ("500 mg" of "500 mg daily"), best-score
        (``scored``) decoding keeps the likelier longer span; which suits a question type is measured, not assumed.
        """
        gold = {doc.doc_id: doc for doc in documents}
        s = self.settings
        relation_mode = s.relation_decoding or s.decoding
        # relation answers taken from the context's entities do not depend on the decoding mode
        relation_modes = _calibrated_modes(relation_mode) if s.relation_tails == "spans" else (relation_mode,)
        concept_rows = self.concept_questions(documents)

        def strict_f1(part: str, predictions: Mapping[str, DocumentPredictions]) -> float:
            predicted = {doc_id: p.document() for doc_id, p in predictions.items()}
            return evaluate_documents(gold, predicted)[part]["strict"]["micro"]["f1"]

        training = self.training
        self.eval()
        try:
            concept_spans = self._spans_on_grid(concept_rows, _calibrated_modes(s.decoding), batch_size)

            def found(choice: tuple[str, float]) -> dict[str, DocumentPredictions]:
                predictions = predictions_for(documents)
                self.add_answers(predictions, concept_rows, concept_spans[choice])
                return predictions

            concept_choice = _best(concept_spans, lambda choice: strict_f1("concepts", found(choice)), s.decoding)
            chosen: dict[str, float | str] = dict(zip(("decoding", "threshold"), concept_choice))
            relation_rows = self.relation_questions(list(found(concept_choice).values()))
            if relation_rows:
                relation_spans = self._spans_on_grid(relation_rows, relation_modes, batch_size)

                def answered(choice: tuple[str, float]) -> dict[str, DocumentPredictions]:
                    predictions = found(concept_choice)
                    self.add_answers(predictions, relation_rows, relation_spans[choice])
                    return predictions

                relation_choice = _best(relation_spans, lambda choice: strict_f1("relations", answered(choice)),
                                        relation_mode)
                chosen.update(zip(("relation_decoding", "relation_threshold"), relation_choice))
        finally:
            self.train(training)
        self.settings = dataclasses.replace(s, **chosen)
        return chosen

    def _spans_on_grid(self, rows: Sequence[dict], modes: Sequence[str], batch_size: int
                       ) -> dict[tuple[str, float], list[list[ScoredSpan]]]:
        """Scored document character spans answering each of ``rows``, decoded in each of ``modes`` at every value
        of :data:`THRESHOLD_GRID`."""
        grid = [(mode, threshold) for mode in modes for threshold in THRESHOLD_GRID]
        spans: dict[tuple[str, float], list[list[ScoredSpan]]] = {choice: [[] for _ in rows] for choice in grid}
        for indices, hidden, inputs in self._encoded(rows, batch_size):
            batch, output = [rows[i] for i in indices], self.span_head(hidden, *_masks(inputs))
            for choice, decoded in spans.items():
                for i, row_spans in zip(indices, self._char_spans(batch, output, inputs, *choice)):
                    decoded[i] = row_spans
        return spans

    @torch.no_grad()
    def extract_relations(self, documents: Sequence[Document], *, batch_size: int = 32) -> list[Document]:
        """Relations among the given entities of ``documents`` (e.g. gold concepts): Documents holding those
        entities (renumbered, discontinuous ones collapsed to outer bounds) and the predicted relations."""
        predictions = predictions_with_entities(documents)
        training = self.training
        self.eval()
        try:
            self._answer(predictions, self.relation_questions(list(predictions.values())), batch_size)
        finally:
            self.train(training)
        return [p.document() for p in predictions.values()]

    # --- saving and loading -----------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike, *, base_model_id: str | None = None) -> None:
        """Write the extractor (layout: :mod:`~clinical_prompt.extractors.mrc.saved`); ``extractor.json`` comes last.

        ``base_model_id`` (a hub id) is recorded as the backbone to load a frozen extractor onto; by default the
        backbone name it was created from, unless that was a local path.
        """
        if base_model_id is not None and public_model_id(base_model_id) is None:
            raise ValueError(f"base_model_id={base_model_id!r} is not a hub id; local paths are not recorded")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        backbone_id = base_model_id or self.backbone_id
        files = {SCHEMA_FILE: self.schema.to_dict(), LABELS_FILE: {"query_types": query_types(self.schema)}}
        if not self.spec.freeze_backbone:
            save_backbone(self.encoder.backbone, self.tokenizer, directory / BACKBONE_DIR)
        if isinstance(self.encoder, PromptedEncoder):
            self.encoder.save_pretrained(directory, base_model_id=backbone_id, extra_files=files)
        else:
            tensors = {HEADS_PREFIX + k: v.detach().cpu().contiguous() for k, v in self.span_head.state_dict().items()}
            write_bytes(directory / HEADS_FILE, save(tensors, metadata={"format": "pt"}))
            for name, content in files.items():
                write_json(directory / name, content)
        meta = {"kind": KIND, "strategy": self.strategy, "settings": dataclasses.asdict(self.settings),
                "backbone": backbone_id}
        write_json(directory / EXTRACTOR_FILE, meta)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, backbone: str | None = None) -> MrcExtractor:
        """Load an extractor written by :meth:`save_pretrained`.

        Strategies that train the backbone load it (and the tokenizer) from ``backbone/``; a frozen one loads
        ``backbone`` (hub id, folder or ``"minilm"``), by default the one recorded at saving.
        """
        directory = Path(directory)
        saved = read_saved(directory)
        source, use_safetensors = backbone or saved.meta.get("backbone"), None
        if not saved.spec.freeze_backbone:
            source, use_safetensors = saved_backbone(directory), True
        elif source is None:
            raise ExtractorFormatError(f"{directory}: no backbone recorded; pass backbone= (hub id or folder)")
        model = load_backbone(source, use_safetensors=use_safetensors)
        return cls._assemble(directory, saved, model, load_tokenizer(source))

    @classmethod
    def on_base(cls, directory: str | os.PathLike, backbone: nn.Module, tokenizer: Any) -> MrcExtractor:
        """Load a saved ``soft-prompt-frozen`` extractor onto an encoder already loaded, with its tokenizer.

        The encoder is shared, neither copied nor changed: the prompt tables and the span head are the only new
        weights, on the device and in the dtype of its word embeddings. Other strategies carry their own backbone and
        are refused.
        """
        directory = Path(directory)
        saved = read_saved(directory)
        if not (saved.spec.freeze_backbone and saved.spec.uses_soft_prompts):
            raise ExtractorFormatError(
                f"{directory}: strategy {saved.spec.name!r} has no frozen base to share; only 'soft-prompt-frozen' "
                "adapters load onto a base (load this one with clinical_prompt.extractors.load_extractor)"
            )
        extractor = cls._assemble(directory, saved, backbone, tokenizer)
        embeddings = backbone.get_input_embeddings().weight
        for part in (extractor.encoder.prompts, extractor.span_head):
            part.to(embeddings.device, embeddings.dtype)
        return extractor

    @classmethod
    def _assemble(cls, directory: Path, saved: SavedExtractor, model: nn.Module, tokenizer: Any) -> MrcExtractor:
        settings, spec = saved.settings, saved.spec
        head = span_head(model.config.hidden_size, settings)
        if spec.uses_soft_prompts:
            encoder = PromptedEncoder.from_pretrained(model, directory, heads=head)
        else:
            encoder = HardPromptEncoder(model, head)
            expected = {HEADS_PREFIX + name: value.shape for name, value in head.state_dict().items()}
            tensors = read_safetensors(directory / HEADS_FILE, expected)
            head.load_state_dict({name[len(HEADS_PREFIX):]: value for name, value in tensors.items()})
        return cls(saved.schema, tokenizer, encoder, strategy=spec.name, settings=settings,
                   backbone_id=saved.meta.get("backbone"))


def _best(choices: Iterable[tuple[str, float]], f1: Callable[[tuple[str, float]], float], mode: str
          ) -> tuple[str, float]:
    """The ``(decoding mode, threshold)`` of ``choices`` with the best ``f1``; ties: ``mode``, then the higher
    threshold."""
    return max(choices, key=lambda choice: (f1(choice), choice[0] == mode, choice[1]))


def _calibrated_modes(mode: str) -> tuple[str, ...]:
    """The decoding modes calibration tries for a part set to ``mode``: nested stays nested."""
    return (mode,) if mode == "nested" else ("flat", "scored")


def _scored_candidates(row: RelationQuestion, start_p: Tensor, end_p: Tensor) -> list[ScoredSpan]:
    """The relation row's ``candidates`` (character spans) that its context tokens cover, each scored by the smaller
    of the start probability of its first token and the end probability of its last."""
    offsets = row["offset_mapping"]
    scored = []
    for start, end in row["candidates"]:
        tokens = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
        if tokens:
            scored.append((start, end, min(start_p[tokens[0]].item(), end_p[tokens[-1]].item())))
    return scored


def _masks(inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """The context, word-start and word-end masks of a batch (:meth:`MrcExtractor.batch_inputs`)."""
    return inputs["context_mask"], inputs["word_start_mask"], inputs["word_end_mask"]


