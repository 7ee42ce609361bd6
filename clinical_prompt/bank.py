"""One frozen base encoder, many soft-prompt adapters by name, and rows of different adapters in one forward pass.

An adapter is a directory saved by a ``soft-prompt-frozen`` extractor (prompt tables, span head, schema and
settings; see :mod:`clinical_prompt.extractors.mrc`). :class:`AdapterBank` loads the base once and each adapter onto
it (:meth:`MrcExtractor.on_base`), so an adapter costs its prompt tables and span head, not a base. Adapters may
differ in institution, schema, prompt depth and prompt length.

Rows are batched by the layer their prompts start in, prompt depth, prompt length and text length, so that most
batches hold one kind of prompt and little padding. Late prompts (``prompt_start_layer`` k > 0) run the layers below
k once per distinct text for every adapter of the batch (:mod:`clinical_prompt.prompts.trunk`); rows of different
start layers in one batch run in separate passes. A batch gives each row its own adapter's prompt, padded on the
left to the longest of the batch with the padding masked, so that every prompt ends right before the text:
input-layer rows get extra input positions (:func:`~clinical_prompt.prompts.embed_with_prompts`), deep rows
key/value prefixes (:meth:`~clinical_prompt.prompts.DeepPromptHandle.prefixes`), and a batch holding both runs both
with the other kind masked out. Each adapter's span head then reads its own rows. On encoders with absolute
positions (BERT, RoBERTa, Megatron-BERT) a row thus equals its adapter run alone, up to float rounding; with
relative positions (DeBERTa-v2, MPNet) a row beside a longer prompt sees its first token further from the text.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from clinical_prompt.backbone import load_backbone, load_tokenizer
from clinical_prompt.brat import Document
from clinical_prompt.extractors.base import DocumentPredictions, length_batches, notes_as_documents
from clinical_prompt.extractors.mrc import MrcExtractor, ScoredSpan, predictions_for
from clinical_prompt.prompts.deep import attach_deep_prompts, layer_prefixes
from clinical_prompt.prompts.inputs import embed_with_prompts
from clinical_prompt.prompts.trunk import encode_late
from clinical_prompt.pull import saved_extractor

__all__ = ["AdapterBank", "load_adapter"]

Base = str | os.PathLike | nn.Module


def _base_and_tokenizer(base: Base, tokenizer: Any) -> tuple[nn.Module, Any]:
    """The encoder and tokenizer of ``base``: a hub id, folder or ``"minilm"``, or an encoder already loaded (its
    tokenizer then comes from ``tokenizer`` or the encoder's ``name_or_path``)."""
    if not isinstance(base, nn.Module):
        return load_backbone(base), tokenizer or load_tokenizer(base)
    if tokenizer is None:
        source = getattr(base.config, "_name_or_path", None)
        if not source:
            raise ValueError("the base encoder records no name_or_path to load its tokenizer from; pass tokenizer=")
        tokenizer = load_tokenizer(source)
    return base, tokenizer


def load_adapter(
    base: Base,
    name_or_path: str | os.PathLike,
    *,
    tokenizer: Any = None,
    revision: str | None = None,
    token: str | None = None,
) -> MrcExtractor:
    """A saved ``soft-prompt-frozen`` adapter on ``base``, ready for ``extract`` and ``predict``.

    ``name_or_path``: a local folder or a hub repository ``ORG/NAME[@REVISION]`` (see :mod:`clinical_prompt.pull`).
    ``base``: a hub id, model folder or ``"minilm"``, or an encoder already loaded (``AutoModel``), which is shared,
    not copied. Raises ``PullError`` for a repository that cannot be had, ``ExtractorFormatError`` /
    ``AdapterFormatError`` for an unreadable adapter and ``AdapterCompatibilityError`` for a base of another shape.
    """
    with saved_extractor(name_or_path, revision=revision, token=token) as directory:
        backbone, tokenizer = _base_and_tokenizer(base, tokenizer)
        return MrcExtractor.on_base(directory, backbone, tokenizer)


class AdapterBank:
    """A base encoder loaded once and adapters loaded onto it by name; :meth:`extract` serves them all at once.

    Example::

        bank = AdapterBank("UFNLP/gatortron-base")
        bank.add("hospital-a", "adapters/hospital-a")
        bank.add("hospital-b", "adapters/hospital-b-sdoh")
        predictions = bank.extract(documents, ["hospital-a", "hospital-b", "hospital-a"])
    """

    def __init__(self, base: Base = "minilm", *, tokenizer: Any = None) -> None:
        """``base`` as for :func:`load_adapter`; adapters follow its device and dtype (move it before adding)."""
        self.backbone, self.tokenizer = _base_and_tokenizer(base, tokenizer)
        self.backbone.requires_grad_(False).eval()
        self._adapters: dict[str, MrcExtractor] = {}

    # --- adapters ---------------------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Names of the loaded adapters, in the order they were added."""
        return list(self._adapters)

    def __len__(self) -> int:
        return len(self._adapters)

    def __contains__(self, name: object) -> bool:
        return name in self._adapters

    def __getitem__(self, name: str) -> MrcExtractor:
        """The adapter ``name`` as an extractor on the shared base (its ``extract`` runs it alone)."""
        self._require(name)
        return self._adapters[name]

    def _require(self, name: str) -> None:
        if name not in self._adapters:
            raise KeyError(f"no adapter named {name!r}; loaded: {self.names}")

    def add(
        self, name: str, name_or_path: str | os.PathLike, *, revision: str | None = None, token: str | None = None
    ) -> MrcExtractor:
        """Load the adapter saved in a local folder or a hub repository ``ORG/NAME[@REVISION]`` onto the base as
        ``name`` (a new name)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"an adapter name must be a non-empty string, got {name!r}")
        if name in self._adapters:
            raise ValueError(f"an adapter named {name!r} is loaded; replace() swaps it")
        self._adapters[name] = self._load(name_or_path, revision, token)
        return self._adapters[name]

    def replace(
        self, name: str, name_or_path: str | os.PathLike, *, revision: str | None = None, token: str | None = None
    ) -> MrcExtractor:
        """Swap adapter ``name`` for the one saved in a local folder or a hub repository; the old one serves until
        the new one is loaded, and stays if loading fails."""
        self._require(name)
        self._adapters[name] = self._load(name_or_path, revision, token)
        return self._adapters[name]

    def remove(self, name: str) -> None:
        """Unload adapter ``name``; its memory is freed once no caller holds it."""
        self._require(name)
        del self._adapters[name]

    def _load(self, name_or_path: str | os.PathLike, revision: str | None, token: str | None) -> MrcExtractor:
        with saved_extractor(name_or_path, revision=revision, token=token) as directory:
            return MrcExtractor.on_base(directory, self.backbone, self.tokenizer).eval()

    # --- extraction -------------------------------------------------------------------------------------------

    def extract(
        self, documents: Sequence[Document], adapter_names: Sequence[str] | str, *, batch_size: int = 32
    ) -> list[Document]:
        """Predicted Documents, each by its adapter (``adapter_names[i]`` for ``documents[i]``, or one name for all),
        equal to that adapter's ``extract``; rows of different adapters share forward passes of ``batch_size``."""
        return [p.document() for p in self.predictions(documents, adapter_names, batch_size=batch_size)]

    def predict(
        self, notes: Sequence[str], adapter_names: Sequence[str] | str, *, batch_size: int = 32
    ) -> list[dict[str, list[dict[str, Any]]]]:
        """Entities and relations of each plain note string by its adapter, with types, character offsets and scores,
        as the adapter's own ``predict`` gives them."""
        return [p.results() for p in self.predictions(notes_as_documents(notes), adapter_names, batch_size=batch_size)]

    @torch.no_grad()
    def predictions(
        self, documents: Sequence[Document], adapter_names: Sequence[str] | str, *, batch_size: int = 32
    ) -> list[DocumentPredictions]:
        """The scored predictions of each document by its adapter, in input order."""
        if isinstance(adapter_names, str):
            adapter_names = [adapter_names] * len(documents)
        if len(adapter_names) != len(documents):
            raise ValueError(f"{len(documents)} documents but {len(adapter_names)} adapter names")
        predictions = predictions_for(documents)
        groups: dict[str, list[Document]] = {}
        for doc, name in zip(documents, adapter_names):
            self._require(name)
            groups.setdefault(name, []).append(doc)
        self._answer(predictions, [
            (name, row) for name, docs in groups.items() for row in self[name].concept_questions(docs)
        ], batch_size)
        self._answer(predictions, [
            (name, row) for name, docs in groups.items()
            for row in self[name].relation_questions([predictions[doc.doc_id] for doc in docs])
        ], batch_size)
        return list(predictions.values())

    def _answer(
        self, predictions: dict[str, DocumentPredictions], questions: list[tuple[str, dict]], batch_size: int
    ) -> None:
        rows = [row for _, row in questions]
        names = [name for name, _ in questions]
        spans = self.answer_spans(rows, names, batch_size=batch_size)
        by_name: dict[str, list[int]] = {}
        for index, name in enumerate(names):
            by_name.setdefault(name, []).append(index)
        for name, indices in by_name.items():
            self[name].add_answers(predictions, [rows[i] for i in indices], [spans[i] for i in indices])

    def answer_spans(
        self, rows: Sequence[dict], adapter_names: Sequence[str], *, batch_size: int = 32
    ) -> list[list[ScoredSpan]]:
        """The decoded, scored character spans of each row (built by its adapter's question builders), in mixed
        batches."""
        spans: list[list[ScoredSpan]] = [[] for _ in rows]
        all_adapters = [self[name] for name in adapter_names]
        for indices in length_batches(rows, batch_size, key=lambda i: _cost(rows[i], all_adapters[i])):
            batch = [rows[i] for i in indices]
            adapters = [all_adapters[i] for i in indices]
            inputs = self._batch_inputs(batch, adapters)
            hidden = self._hidden(inputs, adapters)
            for adapter, positions in _positions_by_adapter(adapters).items():
                index = torch.tensor(positions, device=hidden.device)
                masks = {key: inputs[key][index] for key in ("context_mask", "word_start_mask", "word_end_mask")}
                answers = adapter.answer_spans([batch[p] for p in positions], hidden[index], masks)
                for p, answer in zip(positions, answers):
                    spans[indices[p]] = answer
        return spans

    @torch.no_grad()
    def encode(self, rows: Sequence[dict], adapter_names: Sequence[str]) -> Tensor:
        """Encoder states ``[len(rows), T, H]`` of one mixed batch: row ``i`` (built by its adapter's question
        builders) run with the prompt of adapter ``adapter_names[i]``."""
        adapters = [self[name] for name in adapter_names]
        return self._hidden(self._batch_inputs(rows, adapters), adapters)

    def _batch_inputs(self, rows: Sequence[dict], adapters: Sequence[MrcExtractor]) -> dict[str, Tensor]:
        device = next(self.backbone.parameters()).device
        return {name: tensor.to(device) for name, tensor in adapters[0].batch_inputs(rows).items()}

    def _hidden(self, inputs: dict[str, Tensor], adapters: Sequence[MrcExtractor]) -> Tensor:
        """Encoder states of a mixed batch; rows whose prompts start in different layers run in separate passes."""
        starts = [_start_layer(adapter) for adapter in adapters]
        if len(set(starts)) == 1:
            return self._hidden_from(starts[0], inputs, adapters)
        hidden: Tensor | None = None
        for start in sorted(set(starts)):
            positions = [i for i, s in enumerate(starts) if s == start]
            index = torch.tensor(positions, device=inputs["input_ids"].device)
            part = self._hidden_from(
                start, {name: tensor[index] for name, tensor in inputs.items()}, [adapters[i] for i in positions]
            )
            hidden = part.new_empty(len(adapters), *part.shape[1:]) if hidden is None else hidden
            hidden[index] = part
        return hidden

    def _hidden_from(self, start: int, inputs: dict[str, Tensor], adapters: Sequence[MrcExtractor]) -> Tensor:
        groups = list(_positions_by_adapter(adapters).items())
        shallow = _prompt_batch(groups, inputs["block_ids"], "input")
        deep = _prompt_batch(groups, inputs["block_ids"], "deep")
        text = {key: inputs[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in inputs}
        handle = attach_deep_prompts(self.backbone) if deep is not None else None
        if shallow is None and handle is not None:  # deep rows only: the layers below ``start`` are shared
            prompts, mask = deep
            past = layer_prefixes(prompts, handle.num_layers - start)
            return encode_late(handle, text, past, start_layer=start, prefix_mask=mask)
        with handle.prefixes(layer_prefixes(deep[0], handle.num_layers), deep[1]) if handle else nullcontext():
            if shallow is None:
                return self.backbone(**text).last_hidden_state
            prompts, mask = shallow
            return embed_with_prompts(
                self.backbone, inputs["input_ids"], inputs["attention_mask"], prompts, inputs.get("token_type_ids"),
                prefix_mask=mask,
            )


def _start_layer(adapter: MrcExtractor) -> int:
    """The first layer the adapter's prompts enter (0 for input-layer prompts)."""
    return adapter.encoder.config.prompt_start_layer


def _cost(row: dict, adapter: MrcExtractor) -> tuple[int, bool, int, int, list[int]]:
    """Batch order: by the layer prompts start in (rows of one start share lower layers), input-layer rows before
    deep rows (a batch holding both pays for both kinds of prompt), then by prompt length and text length (every row
    of a batch pays for its longest prompt and its longest text), rows of the same text next to each other."""
    config = adapter.encoder.config
    return (
        _start_layer(adapter), config.depth == "deep", config.num_virtual_tokens, len(row["input_ids"]),
        row["input_ids"],
    )


def _positions_by_adapter(adapters: Sequence[MrcExtractor]) -> dict[MrcExtractor, list[int]]:
    """Each adapter of a batch with the positions of its rows."""
    groups: dict[MrcExtractor, list[int]] = {}
    for position, adapter in enumerate(adapters):
        groups.setdefault(adapter, []).append(position)
    return groups


def _prompt_batch(
    groups: Sequence[tuple[MrcExtractor, list[int]]], block_ids: Tensor, depth: str
) -> tuple[Tensor, Tensor] | None:
    """Prompts ``[batch, P, width]`` and their mask ``[batch, P]`` for the rows whose adapter has prompts of
    ``depth``, each left-padded to the longest ``P``; rows of other adapters are all masked. ``None`` if none."""
    chosen = [(adapter, rows) for adapter, rows in groups if adapter.encoder.config.depth == depth]
    if not chosen:
        return None
    length = max(adapter.encoder.config.num_virtual_tokens for adapter, _ in chosen)
    first = chosen[0][0].encoder
    prompts = first.prompts.seed.new_zeros(len(block_ids), length, first.config.table_width)
    mask = torch.zeros(len(block_ids), length, dtype=torch.bool, device=prompts.device)
    for adapter, rows in chosen:
        index = torch.tensor(rows, device=block_ids.device)
        own = length - adapter.encoder.config.num_virtual_tokens
        prompts[index, own:] = adapter.encoder.prompts(block_ids[index]).to(prompts)
        mask[index, own:] = True
    return prompts, mask
