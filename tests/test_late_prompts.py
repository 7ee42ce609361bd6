"""Late prompts: deep prompts from layer k, the layers below shared by the rows of one window."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from clinical_prompt.prompts import ClinicalPromptConfig, PromptedEncoder, parameter_report
from clinical_prompt.prompts.deep import attach_deep_prompts
from clinical_prompt.prompts.trunk import encode_late
from tests.test_prompt_injection import CASES, CONFIGS, SDPA_SELF_ATTENTION, use_sdpa_attention

LAYERS = 3


def deep_model(name: str, impl: str = "eager") -> torch.nn.Module:
    """A seeded tiny encoder of ``LAYERS`` layers (``impl="sdpa"``: transformers' SDPA or ours)."""
    torch.manual_seed(0)
    config = CONFIGS[name]()
    config.num_hidden_layers = LAYERS
    ours = impl == "sdpa" and config.model_type in SDPA_SELF_ATTENTION
    model = AutoModel.from_config(config, attn_implementation="eager" if ours else impl)
    if ours:
        use_sdpa_attention(model)
    return model.eval()


def window_rows(model: torch.nn.Module, copies: int = 3) -> dict[str, torch.Tensor]:
    """Two windows, the second padded, each repeated ``copies`` times (interleaved), as one batch."""
    torch.manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    ids[1, 5:] = model.config.pad_token_id
    order = torch.arange(2).repeat(copies)
    return {"input_ids": ids[order], "attention_mask": mask[order]}


def row_prefixes(handle, rows: int, start_layer: int, requires_grad: bool = False) -> list[tuple]:
    torch.manual_seed(2)
    return [
        tuple(torch.randn(rows, 4, handle.kv_size, requires_grad=requires_grad) for _ in range(2))
        for _ in range(handle.num_layers - start_layer)
    ]


def each_row_alone(model, handle, inputs, past, start_layer) -> torch.Tensor:
    rows = []
    for i in range(len(inputs["input_ids"])):
        row_past = [(key[i : i + 1], value[i : i + 1]) for key, value in past]
        with handle.prefixes(row_past, start_layer=start_layer):
            row = {name: tensor[i : i + 1] for name, tensor in inputs.items()}
            rows.append(model(**row).last_hidden_state)
    return torch.cat(rows)


@pytest.mark.parametrize("start_layer", [1, 2])
@pytest.mark.parametrize(("name", "impl"), CASES)
def test_shared_trunk_equals_each_row_alone(name: str, impl: str, start_layer: int) -> None:
    model = deep_model(name, impl)
    handle = attach_deep_prompts(model)
    inputs = window_rows(model)
    past = row_prefixes(handle, len(inputs["input_ids"]), start_layer)
    batches = []
    hook = handle.layers[0].attention.register_forward_pre_hook(
        lambda module, args, kwargs: batches.append(len((args or [kwargs.get("hidden_states")])[0])), with_kwargs=True
    )
    with torch.no_grad():
        shared = encode_late(handle, inputs, past, start_layer=start_layer)
    hook.remove()
    with torch.no_grad():
        alone = each_row_alone(model, handle, inputs, past, start_layer)
    assert batches == [2]  # the lowest layer ran once, on the two distinct windows
    torch.testing.assert_close(shared, alone, atol=1e-5, rtol=1e-5)
    assert not any("forward" in block.__dict__ for block in handle.blocks)  # the skipped layers are restored


@pytest.mark.parametrize("name", ["bert", "mpnet", "deberta-v3"])
def test_shared_trunk_gradients_equal_each_row_alone(name: str) -> None:
    model = deep_model(name)
    handle = attach_deep_prompts(model)
    inputs = window_rows(model)
    past = row_prefixes(handle, len(inputs["input_ids"]), 1, requires_grad=True)
    weights = torch.randn(len(inputs["input_ids"]), 7, model.config.hidden_size)

    def gradients(run) -> list[torch.Tensor]:
        model.zero_grad()
        for key, value in past:
            key.grad = value.grad = None
        (run() * weights).sum().backward()
        trunk = [p.grad.clone() for p in handle.blocks[0].parameters()]
        return trunk + [tensor.grad.clone() for pair in past for tensor in pair]

    shared = gradients(lambda: encode_late(handle, inputs, past, start_layer=1))
    alone = gradients(lambda: each_row_alone(model, handle, inputs, past, 1))
    for a, b in zip(shared, alone, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_frozen_trunk_runs_without_autograd() -> None:
    model = deep_model("bert").train()
    model.requires_grad_(False)
    handle = attach_deep_prompts(model)
    inputs = window_rows(model)
    past = row_prefixes(handle, len(inputs["input_ids"]), 2, requires_grad=True)
    entering = []
    hook = handle.blocks[2].register_forward_pre_hook(lambda module, args: entering.append(args[0]))
    encode_late(handle, inputs, past, start_layer=2).sum().backward()
    hook.remove()
    assert not entering[0].requires_grad  # the trunk kept no graph
    assert all(tensor.grad is not None for pair in past for tensor in pair)


def minilm_encoder(minilm_path, start_layer: int) -> PromptedEncoder:
    backbone = AutoModel.from_pretrained(minilm_path).eval()
    blocks = ["Drug", "Dosage"]
    config = ClinicalPromptConfig(
        depth="deep", num_virtual_tokens=8, prompt_blocks=blocks, prompt_init="query",
        prompt_init_texts={name: f"find the {name} mentions" for name in blocks}, prompt_start_layer=start_layer,
    )
    model = PromptedEncoder(backbone, config, tokenizer=AutoTokenizer.from_pretrained(minilm_path)).eval()
    model.freeze_backbone()
    return model


def test_late_prompt_tables_hold_the_upper_layers_and_round_trip(tmp_path, minilm_path) -> None:
    full, late = minilm_encoder(minilm_path, 0), minilm_encoder(minilm_path, 4)
    hidden = full.config.token_dim
    assert late.config.prompt_layers == 2
    assert late.prompts.tables.shape == (2, 8, 2 * 2 * hidden)
    assert parameter_report(late)["trainable_parameters"] == 2 * 8 * 2 * 2 * hidden
    # query initialization: the keys and values of layers 4 and 5, as the full-depth tables hold them
    torch.testing.assert_close(late.prompts.tables, full.prompts.tables[..., 4 * 2 * hidden :], rtol=0, atol=1e-6)
    late.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["prompt_start_layer"] == 4
    loaded = PromptedEncoder.from_pretrained(AutoModel.from_pretrained(minilm_path).eval(), tmp_path)
    ids = torch.tensor([[101, 2000, 2001, 102], [101, 2000, 2001, 102], [101, 2003, 102, 0]])
    mask = (ids > 0).long()
    with torch.no_grad():
        expected = late(ids, mask, block_ids=torch.tensor([0, 1, 1]))
        actual = loaded(ids, mask, block_ids=torch.tensor([0, 1, 1]))
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt_start_layer": -1}, "integer >= 0"),
        ({"prompt_start_layer": 1.5}, "integer >= 0"),
        ({"prompt_start_layer": 2}, "needs depth='deep'"),
        ({"prompt_start_layer": 6, "depth": "deep", "num_layers": 6}, "use 0 to 5"),
    ],
)
def test_prompt_start_layer_is_validated(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        ClinicalPromptConfig(**fields)


def test_start_layer_beyond_the_base_is_refused_when_bound(minilm_path) -> None:
    config = ClinicalPromptConfig(depth="deep", prompt_start_layer=6)
    with pytest.raises(ValueError, match="base model of 6 layers"):
        PromptedEncoder(AutoModel.from_pretrained(minilm_path), config)
