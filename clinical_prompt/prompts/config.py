"""The clinical soft-prompt configuration, a PEFT prompt-tuning config with named prompt blocks.

One class covers input and deep prompts. It keeps PEFT's ``PROMPT_TUNING`` type: once saved, a clinical adapter
holds plain prompt tables (reparameterizations are materialized), which is what PEFT's prompt tuning stores, and
``PromptTuningConfig`` needs no method-specific field, so stock prompt-tuning files load into this class with the
clinical fields at their defaults. The base model fingerprint reuses PEFT's ``token_dim`` (hidden size),
``num_layers`` and ``num_attention_heads`` and adds ``base_model_type`` and ``vocab_size``.
"""
from __future__ import annotations

import dataclasses
import enum
import reprlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from peft import PromptTuningConfig, TaskType

from clinical_prompt.errors import ClinicalPromptError

DEPTHS = ("input", "deep")
REPARAMETERIZATIONS = ("none", "mlp", "lstm")
PROMPT_INITS = ("random", "vocab", "query")
FINGERPRINT = {
    # config field -> attribute of the base model's transformers config
    "base_model_type": "model_type",
    "token_dim": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads",
    "vocab_size": "vocab_size",
}


class AdapterCompatibilityError(ClinicalPromptError, ValueError):
    """An adapter was trained on a base model of another shape than the one it is loaded onto."""


def _choices(values: tuple[str, ...]) -> str:
    return ", ".join(repr(value) for value in values)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value has the type of an annotation (``int`` excludes ``bool``; an Enum takes its values)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(_matches(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint in (int, float) and isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, (int, float))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return any(value == member.value for member in hint)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args)
    if origin is Literal:
        return " or ".join(repr(arg) for arg in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(arg) for arg in args)}]"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def check_field_types(cls: type, data: Mapping[str, Any]) -> list[str]:
    """Check each value of ``data`` whose key is an ``__init__`` field of the dataclass ``cls`` against that field's
    annotation (``null`` is also accepted where the default is ``None``); the other keys, sorted. Nothing named in
    ``data`` is imported or run.

    Raises:
        ValueError: naming the first field whose value has another type.
    """
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        if name not in fields or (value is None and fields[name].default is None):
            continue
        if not _matches(value, hints[name]):
            raise ValueError(
                f"{name}={reprlib.repr(value)} has type {type(value).__name__}; expected {_type_name(hints[name])}"
            )
    return sorted(set(data) - set(fields))


@dataclass
class ClinicalPromptConfig(PromptTuningConfig):
    """Soft prompts for clinical MRC extraction: one block of ``num_virtual_tokens`` per concept or relation type.

    Args:
        prompt_blocks (`list[str]`): Names of the prompt blocks, one per concept and relation type, or one shared.
        depth (`str`): ``"input"`` (virtual tokens at the embedding layer) or ``"deep"`` (key/value prefixes in
            every layer).
        prompt_start_layer (`int`): Deep prompts only: the first layer that gets prefixes (0: every layer). Late
            prompts (``k > 0``) leave layers ``0..k-1`` to the text alone, so rows of one window share them: they
            run once per window for every question type and every adapter on the same base.
        reparameterization (`str`): ``"none"``, ``"mlp"`` (P-tuning v2 prefix projection) or ``"lstm"``
            (P-tuning prompt encoder); trained through, materialized into plain tables at save time.
        encoder_hidden_size (`int`, *optional*): Bottleneck of the MLP or hidden size of the LSTM; defaults to
            the base model's hidden size.
        prompt_init (`str`): ``"random"``, ``"vocab"`` (embeddings of random vocabulary tokens) or ``"query"``
            (the hard-prompt query of each block). Deep prompts take the keys and values that the frozen
            backbone computes for those tokens in every layer.
        prompt_init_texts (`dict[str, str]`, *optional*): The query per block name, for ``prompt_init="query"``.
        prompt_dropout (`float`): Dropout on the prompt vectors during training.
        base_model_type (`str`, *optional*): ``model_type`` of the base model, checked when loading.
        vocab_size (`int`, *optional*): Vocabulary size of the base model, checked when loading.
        task_type (`str`): PEFT's ``TOKEN_CLS``: the span head scores every text token (start, end) and may find
            several spans per question, a token-level output aligned one-to-one with the input tokens, where PEFT's
            ``QUESTION_ANS`` stands for one start/end answer per sequence.
    """

    num_virtual_tokens: int = field(default=16, metadata={"help": "Number of virtual tokens per prompt block"})
    prompt_blocks: list[str] = field(
        default_factory=lambda: ["prompt"],
        metadata={"help": "Names of the prompt blocks: one per concept and relation type, or one shared block"},
    )
    depth: str = field(
        default="input",
        metadata={"help": "'input': virtual tokens at the embedding layer; 'deep': key/value prefixes in every layer"},
    )
    prompt_start_layer: int = field(
        default=0,
        metadata={"help": "Deep prompts: first layer with prefixes; layers below run once per window (late prompts)"},
    )
    reparameterization: str = field(
        default="none",
        metadata={"help": "'none', 'mlp' or 'lstm'; trained through and materialized into the saved tables"},
    )
    encoder_hidden_size: int | None = field(
        default=None,
        metadata={"help": "Bottleneck of the MLP or hidden size of the LSTM (default: the base hidden size)"},
    )
    prompt_init: str = field(
        default="random",
        metadata={"help": "'random', 'vocab' (random vocabulary embeddings) or 'query' (the block's query text)"},
    )
    prompt_init_texts: dict[str, str] | None = field(
        default=None, metadata={"help": "Query text per prompt block, used with prompt_init='query'"}
    )
    prompt_dropout: float = field(default=0.0, metadata={"help": "Dropout on the prompt vectors during training"})
    base_model_type: str | None = field(
        default=None, metadata={"help": "model_type of the base model the adapter was trained on"}
    )
    vocab_size: int | None = field(
        default=None, metadata={"help": "Vocabulary size of the base model the adapter was trained on"}
    )
    task_type: str | TaskType | None = field(
        default=TaskType.TOKEN_CLS, metadata={"help": "PEFT task type: token-level span scores (TOKEN_CLS)"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.prompt_blocks = list(self.prompt_blocks)
        if not _is_count(self.num_virtual_tokens):
            raise ValueError(f"num_virtual_tokens={self.num_virtual_tokens!r} is not valid; use an integer >= 1.")
        self._check_blocks()
        for name, allowed in (
            ("depth", DEPTHS),
            ("reparameterization", REPARAMETERIZATIONS),
            ("prompt_init", PROMPT_INITS),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not valid; allowed values: {_choices(allowed)}.")
        self._check_init_texts()
        self._check_start_layer()
        dropout = self.prompt_dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"prompt_dropout={dropout!r} is not valid; use a number in [0, 1).")
        for name in ("encoder_hidden_size", "token_dim", "num_layers", "num_attention_heads", "vocab_size"):
            value = getattr(self, name)
            if value is not None and not _is_count(value):
                raise ValueError(f"{name}={value!r} is not valid; use an integer >= 1 or leave it unset.")

    def _check_blocks(self) -> None:
        blocks = self.prompt_blocks
        if not blocks:
            raise ValueError("prompt_blocks=[] is not valid; name at least one prompt block.")
        for name in blocks:
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"prompt_blocks holds {name!r}; every block name must be a non-empty string.")
        duplicates = sorted({name for name in blocks if blocks.count(name) > 1})
        if duplicates:
            raise ValueError(f"prompt_blocks names {duplicates} more than once; block names must be unique.")

    def _check_start_layer(self) -> None:
        start = self.prompt_start_layer
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"prompt_start_layer={start!r} is not valid; use an integer >= 0.")
        if start and self.depth != "deep":
            raise ValueError(f"prompt_start_layer={start} needs depth='deep'; input prompts enter at layer 0.")
        if self.num_layers is not None and start >= self.num_layers:
            raise ValueError(
                f"prompt_start_layer={start} is not valid for a base model of {self.num_layers} layers; "
                f"use 0 to {self.num_layers - 1}."
            )

    def _check_init_texts(self) -> None:
        texts = self.prompt_init_texts
        if self.prompt_init != "query":
            if texts is not None:
                raise ValueError(
                    f"prompt_init_texts is only used with prompt_init='query' (prompt_init={self.prompt_init!r})."
                )
            return
        if not isinstance(texts, dict):
            raise ValueError(
                "prompt_init='query' needs prompt_init_texts, a dict of query text per block; "
                f"got {type(texts).__name__}."
            )
        given = {name for name, text in texts.items() if isinstance(text, str) and text.strip()}
        missing = [name for name in self.prompt_blocks if name not in given]
        unknown = sorted(set(texts) - set(self.prompt_blocks))
        if missing or unknown:
            raise ValueError(
                f"prompt_init_texts must give a non-empty query for every block in prompt_blocks: "
                f"missing {missing}, unknown {unknown}."
            )

    @property
    def num_blocks(self) -> int:
        """The number of prompt blocks."""
        return len(self.prompt_blocks)

    def block_id(self, name: str) -> int:
        """The row of the named block in the prompt tables."""
        try:
            return self.prompt_blocks.index(name)
        except ValueError:
            raise KeyError(f"no prompt block named {name!r}; blocks: {self.prompt_blocks}") from None

    @property
    def prompt_layers(self) -> int:
        """The number of layers deep prompts enter: ``num_layers - prompt_start_layer``."""
        if self.num_layers is None:
            raise ValueError("num_layers is unset; bind the config to a base model first.")
        return self.num_layers - self.prompt_start_layer

    @property
    def table_width(self) -> int:
        """Width of one virtual token: the hidden size (input) or ``prompt_layers * 2 * hidden`` (deep)."""
        if self.token_dim is None:
            raise ValueError("token_dim is unset; bind the config to a base model first.")
        return self.token_dim if self.depth == "input" else self.prompt_layers * 2 * self.token_dim

    def bind_base(self, base_config: Any) -> None:
        """Fill the unset fingerprint fields from a transformers config; raise if a set one differs.

        Raises:
            AdapterCompatibilityError: naming the base config attribute, the adapter's value and the base's value.
        """
        for field_name, attribute in FINGERPRINT.items():
            base_value = getattr(base_config, attribute, None)
            value = getattr(self, field_name)
            if value is None:
                setattr(self, field_name, base_value)
            elif value != base_value:
                raise AdapterCompatibilityError(
                    f"the adapter does not fit this base model: {attribute} is {value!r} in the adapter "
                    f"({field_name}) but {base_value!r} in the base model."
                )
        if self.num_transformer_submodules is None:
            self.num_transformer_submodules = 1
        self._check_start_layer()
