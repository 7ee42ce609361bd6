"""The stock peers of the quality benchmark: plain Hugging Face and PEFT token classification, concepts only.

- ``hf-token-classification``: ``AutoModelForTokenClassification``, every weight trains;
- ``peft-prompt-tuning``: PEFT ``PromptTuningConfig`` (20 virtual tokens, task ``TOKEN_CLS``) over that model, the
  backbone frozen (the prompt and PEFT's copy of the classifier train);
- ``peft-p-tuning``: PEFT ``PromptEncoderConfig`` (20 virtual tokens, MLP encoder), likewise frozen.

Each sentence (the library's splitter, which never cuts an entity) is tokenized by the backbone's fast tokenizer
into windows of at most ``max_length`` word pieces; every word piece gets a BIO label of the concept type whose
span it overlaps (overlapping spans: earlier starts win, then longer ones). Predicted tags decode back to character
spans from the word pieces' offsets, so a span can only start and end where a word piece does.

PEFT prepends the virtual tokens to the logits but not to the labels, so the labels are left-padded with -100
and the virtual positions stripped from the logits by hand (:class:`StockTagger`). PEFT also puts the virtual tokens
before the text, which shifts the text's position ids by the prompt length: stock behaviour, kept as it is.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoModelForTokenClassification, AutoTokenizer

from clinical_prompt.brat import Document, Entity
from clinical_prompt.corpus.alignment import OUTSIDE, bio_tags, decode_bio
from clinical_prompt.corpus.sentences import entity_bounds, split_sentences

STOCK_METHODS = ("hf-token-classification", "peft-prompt-tuning", "peft-p-tuning")
STOCK_TRAINED_PARTS = {  # the rates of StockPeer.param_groups each method needs
    "hf-token-classification": ("backbone", "head"), "peft-prompt-tuning": ("head", "prompt"),
    "peft-p-tuning": ("head", "prompt"),
}
VIRTUAL_TOKENS = 20


class StockTagger(nn.Module):
    """A transformers token classifier, or PEFT over one with ``virtual_tokens`` prepended: labels get that many
    columns of -100 in front, and the logits lose the virtual positions."""

    def __init__(self, model: nn.Module, virtual_tokens: int = 0) -> None:
        super().__init__()
        self.model, self.virtual_tokens = model, virtual_tokens

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        if labels is not None:
            labels = torch.cat([labels.new_full((labels.shape[0], self.virtual_tokens), -100), labels], dim=1)
        output = self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        return {"loss": output.loss, "logits": output.logits[:, self.virtual_tokens:]}


def stock_model(method: str, backbone: str, num_labels: int) -> StockTagger:
    """The stock model of ``method`` over the model folder or hub id ``backbone``."""
    from peft import PromptEncoderConfig, PromptTuningConfig, TaskType, get_peft_model

    model = AutoModelForTokenClassification.from_pretrained(backbone, num_labels=num_labels)
    if method == "hf-token-classification":
        return StockTagger(model)
    if method == "peft-prompt-tuning":
        config = PromptTuningConfig(task_type=TaskType.TOKEN_CLS, num_virtual_tokens=VIRTUAL_TOKENS)
    elif method == "peft-p-tuning":
        config = PromptEncoderConfig(task_type=TaskType.TOKEN_CLS, num_virtual_tokens=VIRTUAL_TOKENS,
                                     encoder_reparameterization_type="MLP")
    else:
        raise ValueError(f"unknown stock method {method!r}; use one of {', '.join(STOCK_METHODS)}")
    return StockTagger(get_peft_model(model, config), VIRTUAL_TOKENS)


class StockPeer:
    """A stock tagger over a schema's concept types: training rows, batches, parameter groups and predictions."""

    def __init__(self, method: str, backbone: str, concept_names: Sequence[str], max_length: int) -> None:
        self.labels = [OUTSIDE, *(f"{prefix}-{name}" for name in concept_names for prefix in "BI")]
        self.tokenizer = AutoTokenizer.from_pretrained(backbone)
        self.tagger = stock_model(method, backbone, len(self.labels))
        positions = self.tagger.model.config.max_position_embeddings
        if max_length + self.tagger.virtual_tokens > positions:
            raise ValueError(f"max_length {max_length} + {self.tagger.virtual_tokens} virtual tokens exceed the "
                             f"backbone's {positions} positions")
        self.max_length = max_length

    def windows(self, documents: Sequence[Document]) -> list[dict[str, Any]]:
        """Word-piece windows of every sentence: ``doc``, ``offsets`` (document characters; special tokens
        ``None``), ``input_ids`` and gold ``labels`` (-100 on special tokens)."""
        rows = []
        for doc in documents:
            sentences = split_sentences(doc.text, entity_bounds(doc))
            encoding = self.tokenizer([doc.text[s:e] for s, e in sentences], truncation=True,
                                      max_length=self.max_length, return_overflowing_tokens=True,
                                      return_offsets_mapping=True)
            for ids, offsets, sentence in zip(encoding["input_ids"], encoding["offset_mapping"],
                                              encoding["overflow_to_sample_mapping"]):
                shift = sentences[sentence][0]
                spans = [None if s == e else (s + shift, e + shift) for s, e in offsets]
                rows.append({"doc": doc, "offsets": spans, "input_ids": ids, "labels": self._labels(doc, spans)})
        return rows

    def _labels(self, doc: Document, spans: Sequence[tuple[int, int] | None]) -> list[int]:
        pieces = [i for i, span in enumerate(spans) if span is not None]
        gold = []
        for entity in doc.entities.values():
            inside = [n for n, i in enumerate(pieces) if spans[i][0] < entity.end and spans[i][1] > entity.start]
            if inside and f"B-{entity.type}" in self.labels:
                gold.append((inside[0], inside[-1], entity.type))
        tags = dict(zip(pieces, bio_tags(len(pieces), gold)))
        return [self.labels.index(tags[i]) if i in tags else -100 for i in range(len(spans))]

    def rows(self, documents: Sequence[Document]) -> list[dict[str, list[int]]]:
        """Training rows: ``input_ids`` and ``labels`` of every window."""
        return [{"input_ids": w["input_ids"], "labels": w["labels"]} for w in self.windows(documents)]

    def collate(self, rows: Sequence[Mapping[str, list[int]]]) -> dict[str, Tensor]:
        """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 on padding)."""
        width = max(len(row["input_ids"]) for row in rows)
        pad = self.tokenizer.pad_token_id
        batch = {
            "input_ids": [row["input_ids"] + [pad] * (width - len(row["input_ids"])) for row in rows],
            "attention_mask": [[1] * len(row["input_ids"]) + [0] * (width - len(row["input_ids"])) for row in rows],
            "labels": [row["labels"] + [-100] * (width - len(row["labels"])) for row in rows],
        }
        return {name: torch.tensor(values) for name, values in batch.items()}

    def param_groups(self, rates: Mapping[str, float], weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups of the trainable weights: the classifier at ``rates["head"]``, PEFT's prompt encoder at
        ``rates["prompt"]``, the rest of the model at ``rates["backbone"]``."""
        groups: dict[str, list[nn.Parameter]] = {"backbone": [], "head": [], "prompt": []}
        for name, parameter in self.tagger.named_parameters():
            if parameter.requires_grad:
                part = "head" if "classifier" in name else "prompt" if "prompt_encoder" in name else "backbone"
                groups[part].append(parameter)
        return [{"params": params, "lr": rates[part], "weight_decay": weight_decay}
                for part, params in groups.items() if params]

    def spans(self, window: Mapping[str, Any], label_ids: Sequence[int]) -> list[tuple[int, int, str]]:
        """Document character spans ``(start, end, type)`` of a window's label ids (one per position)."""
        pieces = [i for i, span in enumerate(window["offsets"]) if span is not None]
        tags = [self.labels[label_ids[i]] for i in pieces]
        return [(window["offsets"][pieces[first]][0], window["offsets"][pieces[last]][1], label)
                for first, last, label in decode_bio(tags)]

    @torch.no_grad()
    def extract(self, documents: Sequence[Document], *, batch_size: int = 32) -> list[Document]:
        """One predicted Document per input (same id and text) holding the decoded concept spans."""
        was_training = self.tagger.training
        self.tagger.eval()
        windows = self.windows(documents)
        found: dict[str, list[tuple[int, int, str]]] = {doc.doc_id: [] for doc in documents}
        for begin in range(0, len(windows), batch_size):
            chunk = windows[begin : begin + batch_size]
            logits = self.tagger(**{k: v for k, v in self.collate(chunk).items() if k != "labels"})["logits"]
            for window, predicted in zip(chunk, logits.argmax(-1).tolist()):
                found[window["doc"].doc_id] += self.spans(window, predicted)
        self.tagger.train(was_training)
        return [Document(doc.doc_id, doc.text, entities={
            f"T{n}": Entity(f"T{n}", label, ((start, end),), doc.text[start:end])
            for n, (start, end, label) in enumerate(found[doc.doc_id], start=1)
        }) for doc in documents]
