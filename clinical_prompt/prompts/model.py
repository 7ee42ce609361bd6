"""A Hugging Face encoder with clinical soft prompts (and optional task heads), saved in PEFT's adapter layout."""
from __future__ import annotations

import copy
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import Tensor, nn

from clinical_prompt.atomic import write_bytes, write_json
from clinical_prompt.backbone import public_model_id
from clinical_prompt.layout import CONFIG_NAME, HEADS_PREFIX, WEIGHTS_NAME, AdapterFormatError, inside, read_safetensors
from clinical_prompt.prompts.config import ClinicalPromptConfig, check_field_types
from clinical_prompt.prompts.deep import attach_deep_prompts, layer_prefixes
from clinical_prompt.prompts.encoder import PromptTables
from clinical_prompt.prompts.inputs import embed_with_prompts
from clinical_prompt.prompts.trunk import encode_late

NAMED_MODELS = ("base_model_name_or_path", "tokenizer_name_or_path")  # config fields that name a model
TABLES_KEY = "prompt_tables"


class PromptedEncoder(nn.Module):
    """An encoder ``backbone`` run with the prompt block of each row, plus optional task ``heads``.

    ``forward`` returns the last hidden states of the text tokens only (no virtual positions), so heads and
    labels line up with ``input_ids``. A ``tokenizer`` is needed only for ``prompt_init="query"``.

    Initialization (skipped in inference mode, where tables are loaded): ``random`` draws N(0, 1) as PEFT does;
    ``vocab`` uses random vocabulary tokens and ``query`` the block's query tokens (repeated or cut to
    ``num_virtual_tokens``). With a reparameterization their word embeddings seed its input. Without one, input
    prompts start as those word embeddings and deep prompts as the keys and values every layer of the backbone
    computes when the ``P`` tokens run through it alone.
    """

    def __init__(
        self,
        backbone: nn.Module,
        config: ClinicalPromptConfig,
        heads: nn.Module | None = None,
        *,
        tokenizer: Any = None,
    ) -> None:
        super().__init__()
        config = copy.deepcopy(config)
        config.bind_base(backbone.config)
        self.backbone = backbone
        self.config = config
        self.heads = heads
        self._deep = attach_deep_prompts(backbone) if config.depth == "deep" else None
        if self._deep is not None and self._deep.kv_size != config.token_dim:
            raise ValueError(
                f"deep prompts need key/value projections of the hidden size ({config.token_dim}); "
                f"this backbone's are {self._deep.kv_size} wide"
            )
        self.prompts = PromptTables(config).to(backbone.get_input_embeddings().weight.device)
        if not config.inference_mode:
            self._initialize(tokenizer)

    def _init_token_ids(self, tokenizer: Any) -> Tensor | None:
        """``[num_blocks, P]`` token ids that seed the prompts, or ``None`` for random initialization."""
        config = self.config
        shape = (config.num_blocks, config.num_virtual_tokens)
        if config.prompt_init == "vocab":
            return torch.randint(config.vocab_size, shape)
        if config.prompt_init == "random":
            return None
        if tokenizer is None:
            raise ValueError("prompt_init='query' needs the tokenizer of the base model: pass tokenizer=...")
        rows = []
        for name in config.prompt_blocks:
            ids = tokenizer(config.prompt_init_texts[name], add_special_tokens=False)["input_ids"]
            if not ids:
                raise ValueError(f"the query of prompt block {name!r} has no tokens")
            rows.append((ids * math.ceil(shape[1] / len(ids)))[: shape[1]])
        return torch.tensor(rows)

    @torch.no_grad()
    def _initialize(self, tokenizer: Any) -> None:
        token_ids = self._init_token_ids(tokenizer)
        if token_ids is None:
            return
        seed = self.prompts.seed
        token_ids = token_ids.to(seed.device)
        if self.config.depth == "input" or self.prompts.reparameterization != "none":
            seed.copy_(self.backbone.get_input_embeddings()(token_ids))
            return
        training = self.backbone.training
        self.backbone.eval()
        try:
            seed.copy_(self._token_keys_values(token_ids))
        finally:
            self.backbone.train(training)

    def _token_keys_values(self, token_ids: Tensor) -> Tensor:
        """``[rows, P, prompt_layers * 2 * hidden]``: the key and value projections of ``token_ids`` in each layer that
        gets prompts."""
        outputs: dict[int, Tensor] = {}

        def keep_first(slot: int):
            # the first call projects the tokens; DeBERTa-v2 calls the key projection again for position keys
            def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
                outputs.setdefault(slot, output)

            return hook

        hooks = []
        for layer, site in enumerate(self._deep.layers[self.config.prompt_start_layer :]):
            hooks.append(site.key.register_forward_hook(keep_first(2 * layer)))
            hooks.append(site.value.register_forward_hook(keep_first(2 * layer + 1)))
        try:
            self.backbone(input_ids=token_ids, attention_mask=torch.ones_like(token_ids))
        finally:
            for hook in hooks:
                hook.remove()
        return torch.cat([outputs[slot] for slot in range(len(outputs))], dim=-1)

    def freeze_backbone(self) -> None:
        """Stop gradients into the backbone: only the prompts (and heads) train."""
        self.backbone.requires_grad_(False)

    def _block_ids(self, block_ids: Tensor | None, input_ids: Tensor) -> Tensor:
        if block_ids is None:
            if self.config.num_blocks > 1:
                raise ValueError(f"block_ids is required: the adapter has {self.config.num_blocks} prompt blocks")
            return torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        if block_ids.shape != input_ids.shape[:1]:
            raise ValueError(f"block_ids must be [batch] = [{input_ids.shape[0]}], got {list(block_ids.shape)}")
        return block_ids

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None = None,
        block_ids: Tensor | None = None,
    ) -> Tensor:
        """Hidden states ``[B, T, H]`` of the text tokens, each row run with its prompt block (``block_ids [B]``)."""
        prompts = self.prompts(self._block_ids(block_ids, input_ids))
        if self._deep is None:
            return embed_with_prompts(self.backbone, input_ids, attention_mask, prompts, token_type_ids)
        past = layer_prefixes(prompts, self.config.prompt_layers)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        return encode_late(self._deep, inputs, past, start_layer=self.config.prompt_start_layer)

    @torch.no_grad()
    def adapter_tensors(self) -> dict[str, Tensor]:
        """What ``save_pretrained`` writes: the materialized prompt tables and the head weights."""
        tensors = {TABLES_KEY: self.prompts.materialize()}
        if self.heads is not None:
            tensors.update({HEADS_PREFIX + name: value for name, value in self.heads.state_dict().items()})
        return {name: value.detach().cpu().contiguous() for name, value in tensors.items()}

    def save_pretrained(
        self,
        directory: str | os.PathLike,
        *,
        base_model_id: str | None = None,
        extra_files: dict[str, dict] | None = None,
    ) -> None:
        """Write ``adapter_config.json``, ``adapter_model.safetensors`` and each ``extra_files`` JSON, atomically.

        ``base_model_name_or_path`` records ``base_model_id`` (a hub id), else the backbone's ``_name_or_path``
        where that is a hub id; never a local path.
        """
        if base_model_id is not None and public_model_id(base_model_id) is None:
            raise ValueError(
                f"base_model_id={base_model_id!r} is not a hub id like 'org/name'; local paths are not recorded"
            )
        extra_files = extra_files or {}
        for name in extra_files:
            if Path(name).name != name or not name.endswith(".json") or name == CONFIG_NAME:
                raise ValueError(
                    f"extra file name {name!r} must be a plain '*.json' file name other than {CONFIG_NAME}"
                )
        config = copy.deepcopy(self.config)
        config.inference_mode = True
        config.base_model_name_or_path = base_model_id or public_model_id(
            getattr(self.backbone.config, "_name_or_path", None)
        )
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_bytes(directory / WEIGHTS_NAME, save(self.adapter_tensors(), metadata={"format": "pt"}))
        for name, content in extra_files.items():
            write_json(directory / name, content)
        write_json(directory / CONFIG_NAME, config.to_dict())

    @classmethod
    def from_pretrained(
        cls, backbone: nn.Module, directory: str | os.PathLike, heads: nn.Module | None = None
    ) -> PromptedEncoder:
        """Load an adapter written by :meth:`save_pretrained` onto ``backbone`` (and ``heads``, if it has any).

        The files are read as untrusted: see :func:`read_adapter_config` and :func:`read_safetensors`.

        Raises:
            AdapterCompatibilityError: the adapter was trained on a base of another type or shape.
            AdapterFormatError: a file is missing, unreadable, pickled, outside the directory, or holds fields of the
                wrong type or tensors of the wrong names, shapes or types.
        """
        directory = Path(directory)
        model = cls(backbone, read_adapter_config(directory / CONFIG_NAME), heads)
        expected = {name: value.shape for name, value in model.adapter_tensors().items()}
        model._load_adapter_tensors(read_safetensors(directory / WEIGHTS_NAME, expected))
        return model

    @torch.no_grad()
    def _load_adapter_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Copy materialized prompt tables (inference mode) and head weights in (names and shapes already checked)."""
        self.prompts.seed.copy_(tensors[TABLES_KEY])
        if self.heads is not None:
            heads = {name[len(HEADS_PREFIX) :]: value for name, value in tensors.items() if name != TABLES_KEY}
            self.heads.load_state_dict(heads)


def read_adapter_config(path: Path) -> ClinicalPromptConfig:
    """The config of ``adapter_config.json``, checked field by field without running anything it names.

    Every field of a known name must have its declared type (then ``ClinicalPromptConfig`` checks the values);
    fields of other names are reported in a warning naming the file and dropped; ``base_model_name_or_path`` and
    ``tokenizer_name_or_path`` must be hub ids, never paths.

    Raises:
        AdapterFormatError: naming the file and the field.
    """
    if not inside(path).is_file():
        raise AdapterFormatError(f"{path}: missing; an adapter directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AdapterFormatError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or data.get("peft_type") != "PROMPT_TUNING":
        found = data.get("peft_type") if isinstance(data, dict) else type(data).__name__
        raise AdapterFormatError(f"{path}: peft_type is {found!r}; a clinical prompt adapter has 'PROMPT_TUNING'")
    try:
        unknown = check_field_types(ClinicalPromptConfig, data)
    except ValueError as error:
        raise AdapterFormatError(f"{path}: {error}") from None
    if unknown:
        warnings.warn(f"{path}: unknown fields {unknown} are ignored (written by a newer version?)", stacklevel=2)
    for name in NAMED_MODELS:
        value = data.get(name)
        if value is not None and public_model_id(value) is None:
            raise AdapterFormatError(f"{path}: {name}={value!r} is not a hub id; an adapter never names a local path")
    try:
        config = ClinicalPromptConfig.from_peft_type(**{k: v for k, v in data.items() if k not in unknown})
    except (TypeError, ValueError) as error:
        raise AdapterFormatError(f"{path}: {error}") from None
    if not isinstance(config, ClinicalPromptConfig):
        raise AdapterFormatError(
            f"{path}: PEFT read it as {type(config).__name__}; import clinical_prompt.prompts first"
        )
    config.inference_mode = True
    return config
