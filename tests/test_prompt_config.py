"""ClinicalPromptConfig: validation, base fingerprint, and the round trip through PEFT's config loading."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from peft import PEFT_TYPE_TO_CONFIG_MAPPING, PeftConfig, PeftModel, PeftType, PromptTuningConfig, get_peft_model
from transformers import AutoConfig, AutoModel

from clinical_prompt.prompts import AdapterCompatibilityError, ClinicalPromptConfig

BASE = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def full_config() -> ClinicalPromptConfig:
    return ClinicalPromptConfig(
        num_virtual_tokens=8,
        prompt_blocks=["Drug", "Strength-Drug"],
        depth="deep",
        reparameterization="lstm",
        encoder_hidden_size=24,
        prompt_init="query",
        prompt_init_texts={"Drug": "Find the drugs.", "Strength-Drug": "What is the strength of {drug}?"},
        prompt_dropout=0.1,
        base_model_type="bert",
        token_dim=32,
        num_layers=2,
        num_attention_heads=4,
        vocab_size=100,
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"num_virtual_tokens": 0}, ["num_virtual_tokens=0", ">= 1"]),
        ({"depth": "shallow"}, ["depth='shallow'", "'input', 'deep'"]),
        ({"reparameterization": "gru"}, ["reparameterization='gru'", "'none', 'mlp', 'lstm'"]),
        ({"prompt_init": "text"}, ["prompt_init='text'", "'random', 'vocab', 'query'"]),
        ({"prompt_dropout": 1.0}, ["prompt_dropout=1.0", "[0, 1)"]),
        ({"prompt_dropout": "0.1"}, ["prompt_dropout='0.1'", "[0, 1)"]),
        ({"encoder_hidden_size": 0}, ["encoder_hidden_size=0", ">= 1"]),
        ({"vocab_size": True}, ["vocab_size=True", ">= 1"]),
        ({"prompt_blocks": []}, ["prompt_blocks=[]", "at least one"]),
        ({"prompt_blocks": ["Drug", ""]}, ["prompt_blocks holds ''", "non-empty"]),
        ({"prompt_blocks": ["Drug", "Drug"]}, ["['Drug']", "unique"]),
        ({"prompt_init": "query"}, ["prompt_init='query'", "prompt_init_texts", "NoneType"]),
        (
            {"prompt_init": "query", "prompt_blocks": ["Drug", "ADE"], "prompt_init_texts": {"Drug": "q", "X": "q"}},
            ["missing ['ADE']", "unknown ['X']"],
        ),
        ({"prompt_init_texts": {"prompt": "q"}}, ["prompt_init_texts", "prompt_init='random'"]),
    ],
)
def test_bad_values_are_explained(fields: dict, expected: list[str]) -> None:
    with pytest.raises(ValueError) as caught:
        ClinicalPromptConfig(**fields)
    for part in expected:
        assert part in str(caught.value)


def test_peft_config_from_pretrained_returns_every_field(tmp_path) -> None:
    config = full_config()
    config.save_pretrained(tmp_path)
    loaded = PeftConfig.from_pretrained(str(tmp_path))
    assert type(loaded) is ClinicalPromptConfig
    assert loaded.peft_type == PeftType.PROMPT_TUNING
    assert loaded.to_dict() == config.to_dict()


def test_stock_prompt_tuning_file_loads_with_defaults(tmp_path) -> None:
    PromptTuningConfig(num_virtual_tokens=5, token_dim=32, num_layers=2).save_pretrained(tmp_path)
    loaded = PeftConfig.from_pretrained(str(tmp_path))
    assert type(loaded) is ClinicalPromptConfig
    assert (loaded.num_virtual_tokens, loaded.prompt_blocks, loaded.depth) == (5, ["prompt"], "input")
    assert (loaded.reparameterization, loaded.prompt_init, loaded.base_model_type) == ("none", "random", None)


def test_stock_peft_prompt_tuning_model_still_round_trips(tmp_path) -> None:
    torch.manual_seed(0)
    base = AutoModel.from_config(AutoConfig.for_model("bert", **BASE)).eval()
    fresh = AutoModel.from_config(base.config).eval()
    fresh.load_state_dict(base.state_dict())
    model = get_peft_model(base, PromptTuningConfig(num_virtual_tokens=4, task_type="FEATURE_EXTRACTION"))
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(fresh, tmp_path)
    assert isinstance(loaded.peft_config["default"], ClinicalPromptConfig)
    ids = torch.randint(5, 100, (2, 6))
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        actual = loaded(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    assert torch.equal(actual, expected)


def test_plain_peft_reads_the_file_and_drops_clinical_fields(tmp_path, monkeypatch) -> None:
    full_config().save_pretrained(tmp_path)
    monkeypatch.setitem(PEFT_TYPE_TO_CONFIG_MAPPING, PeftType.PROMPT_TUNING, PromptTuningConfig)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = PeftConfig.from_pretrained(str(tmp_path))
    assert type(loaded) is PromptTuningConfig
    assert (loaded.num_virtual_tokens, loaded.token_dim) == (8, 32)
    assert any("prompt_blocks" in str(warning.message) for warning in caught)


def test_saved_file_is_plain_json_with_builtin_peft_type(tmp_path) -> None:
    full_config().save_pretrained(tmp_path)
    data = json.loads((tmp_path / "adapter_config.json").read_text())
    assert data["peft_type"] == "PROMPT_TUNING"
    assert data["prompt_blocks"] == ["Drug", "Strength-Drug"]


def test_bind_base_fills_the_fingerprint() -> None:
    config = ClinicalPromptConfig(depth="deep", num_virtual_tokens=4, prompt_blocks=["a", "b", "c"])
    config.bind_base(AutoConfig.for_model("megatron-bert", **BASE))
    assert (config.base_model_type, config.token_dim, config.num_layers) == ("megatron-bert", 32, 2)
    assert (config.num_attention_heads, config.vocab_size) == (4, 100)
    assert config.table_width == 2 * 2 * 32


@pytest.mark.parametrize(
    ("model_type", "change", "attribute", "adapter_value", "base_value"),
    [
        ("roberta", {}, "model_type", "'bert'", "'roberta'"),
        ("bert", {"hidden_size": 48}, "hidden_size", "32", "48"),
        ("bert", {"num_hidden_layers": 3}, "num_hidden_layers", "2", "3"),
        ("bert", {"vocab_size": 120}, "vocab_size", "100", "120"),
    ],
)
def test_bind_base_names_the_field_that_differs(model_type, change, attribute, adapter_value, base_value) -> None:
    config = full_config()
    with pytest.raises(AdapterCompatibilityError) as caught:
        config.bind_base(AutoConfig.for_model(model_type, **{**BASE, **change}))
    message = str(caught.value)
    assert f"{attribute} is {adapter_value} in the adapter" in message
    assert f"but {base_value} in the base model" in message


def test_block_ids_by_name() -> None:
    config = full_config()
    assert config.block_id("Strength-Drug") == 1
    with pytest.raises(KeyError, match="Reason"):
        config.block_id("Reason")
