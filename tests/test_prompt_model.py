"""PromptTables and PromptedEncoder: alignment, per-row blocks, freezing, save/load, errors, sizes, training."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from clinical_prompt.prompts import (
    AdapterCompatibilityError,
    AdapterFormatError,
    ClinicalPromptConfig,
    PromptedEncoder,
    PromptTables,
    adapter_size_for,
    parameter_report,
)

HIDDEN = 32
TINY = dict(
    vocab_size=100, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    max_position_embeddings=64,
)
ARCHITECTURES = {
    "bert": {},
    "roberta": {"pad_token_id": 1},
    "deberta-v2": {"relative_attention": True, "pos_att_type": ["c2p", "p2c"], "position_buckets": 16},
    "megatron-bert": {},
    "mpnet": {},
}
DEPTHS = ("input", "deep")
REPARAMETERIZATIONS = ("none", "mlp", "lstm")


def tiny_backbone(model_type: str = "bert", seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    config = AutoConfig.for_model(model_type, **{**TINY, **ARCHITECTURES[model_type], **overrides})
    return AutoModel.from_config(config).eval()


def prompt_config(**fields) -> ClinicalPromptConfig:
    return ClinicalPromptConfig(**{"num_virtual_tokens": 4, "prompt_blocks": ["Drug", "Dosage"], **fields})


def text_batch(rows: int = 3, length: int = 7, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 100, (rows, length), generator=generator)
    input_ids[:, 0] = 2
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, length - 2 :] = 0
    return input_ids, attention_mask


class WordTokenizer:
    """Whitespace tokenizer with ids from word lengths: enough for query initialization."""

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [10 + len(word) for word in text.split()]}


# --- prompt tables ---------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("reparameterization", REPARAMETERIZATIONS)
def test_tables_gather_one_block_per_row(depth: str, reparameterization: str) -> None:
    config = prompt_config(depth=depth, reparameterization=reparameterization, token_dim=HIDDEN, num_layers=3)
    tables = PromptTables(config).eval()
    width = HIDDEN if depth == "input" else 3 * 2 * HIDDEN
    full = tables.materialize()
    assert full.shape == (2, 4, width)
    rows = tables(torch.tensor([1, 0, 1]))
    assert torch.equal(rows, full[[1, 0, 1]])


def test_table_dropout_only_in_training() -> None:
    tables = PromptTables(prompt_config(prompt_dropout=0.5, token_dim=HIDDEN, num_layers=2))
    block_ids = torch.zeros(8, dtype=torch.long)
    assert (tables.train()(block_ids) == 0).any()
    assert torch.equal(tables.eval()(block_ids), tables.materialize()[block_ids])


def test_inference_mode_tables_have_no_reparameterization() -> None:
    config = prompt_config(reparameterization="mlp", token_dim=HIDDEN, num_layers=2, inference_mode=True)
    assert [name for name, _ in PromptTables(config).named_parameters()] == ["tables"]


# --- forward ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ARCHITECTURES)
@pytest.mark.parametrize("depth", DEPTHS)
def test_rows_use_their_own_block(model_type: str, depth: str) -> None:
    model = PromptedEncoder(tiny_backbone(model_type), prompt_config(depth=depth)).eval()
    input_ids, attention_mask = text_batch()
    with torch.no_grad():
        mixed = model(input_ids, attention_mask, block_ids=torch.tensor([0, 1, 0]))
        alone = [model(input_ids, attention_mask, block_ids=torch.full((3,), block)) for block in (0, 1)]
    assert mixed.shape == (3, 7, HIDDEN)
    for row, block in enumerate([0, 1, 0]):
        torch.testing.assert_close(mixed[row], alone[block][row])
    assert not torch.allclose(alone[0], alone[1])


def test_block_ids_required_with_several_blocks() -> None:
    model = PromptedEncoder(tiny_backbone(), prompt_config())
    with pytest.raises(ValueError, match="block_ids is required"):
        model(*text_batch())


def test_input_prompt_initialized_from_query_tokens() -> None:
    backbone = tiny_backbone()
    texts = {"Drug": "find the drugs", "Dosage": "what dosage"}
    config = prompt_config(prompt_init="query", prompt_init_texts=texts)
    model = PromptedEncoder(backbone, config, tokenizer=WordTokenizer())
    expected_ids = torch.tensor([[14, 13, 15, 14], [14, 16, 14, 16]])  # repeated to 4 tokens
    expected = backbone.get_input_embeddings()(expected_ids)
    assert torch.equal(model.prompts.materialize().detach(), expected)


def test_query_init_needs_a_tokenizer() -> None:
    config = prompt_config(prompt_init="query", prompt_init_texts={"Drug": "a", "Dosage": "b"})
    with pytest.raises(ValueError, match="tokenizer"):
        PromptedEncoder(tiny_backbone(), config)


def test_deep_prompt_initialized_from_backbone_keys_and_values() -> None:
    backbone = tiny_backbone()
    texts = {"Drug": "find the drugs", "Dosage": "what dosage"}
    config = prompt_config(depth="deep", prompt_init="query", prompt_init_texts=texts)
    tables = PromptedEncoder(backbone, config, tokenizer=WordTokenizer()).prompts.materialize().detach()
    assert tables.shape == (2, 4, 2 * 2 * HIDDEN)  # per layer: key, value
    first_layer = backbone.encoder.layer[0].attention.self
    with torch.no_grad():
        embedded = backbone.embeddings(input_ids=torch.tensor([[14, 13, 15, 14], [14, 16, 14, 16]]))
        torch.testing.assert_close(tables[..., :HIDDEN], first_layer.key(embedded))
        torch.testing.assert_close(tables[..., HIDDEN : 2 * HIDDEN], first_layer.value(embedded))


def test_frozen_backbone_changes_only_prompts_and_heads() -> None:
    backbone = tiny_backbone()
    model = PromptedEncoder(backbone, prompt_config(reparameterization="mlp"), nn.Linear(HIDDEN, 3))
    model.freeze_backbone()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.01)
    input_ids, attention_mask = text_batch()
    model.heads(model(input_ids, attention_mask, block_ids=torch.tensor([0, 1, 1]))).sum().backward()
    optimizer.step()
    changed = {name for name, value in model.state_dict().items() if not torch.equal(value, before[name])}
    assert changed == {name for name, _ in model.named_parameters() if not name.startswith("backbone.")}
    assert all(name.startswith(("prompts.", "heads.")) for name in changed)


# --- save and load ---------------------------------------------------------------------------------


def trained_model(backbone: nn.Module, **fields) -> PromptedEncoder:
    """A model whose prompts and head moved away from their initialization."""
    model = PromptedEncoder(backbone, prompt_config(**fields), nn.Linear(HIDDEN, 3))
    model.freeze_backbone()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(2):
        input_ids, attention_mask = text_batch()
        model.heads(model(input_ids, attention_mask, block_ids=torch.tensor([0, 1, 1]))).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def assert_same_outputs(first: PromptedEncoder, second: PromptedEncoder) -> None:
    input_ids, attention_mask = text_batch(seed=5)
    block_ids = torch.tensor([1, 0, 1])
    with torch.no_grad():
        expected = first(input_ids, attention_mask, block_ids=block_ids)
        assert torch.equal(second(input_ids, attention_mask, block_ids=block_ids), expected)


@pytest.fixture
def saved_adapter(tmp_path: Path) -> Path:
    trained_model(tiny_backbone()).save_pretrained(tmp_path)
    return tmp_path


def load(directory: Path, heads: nn.Module | None = None) -> PromptedEncoder:
    heads = nn.Linear(HIDDEN, 3) if heads is None else heads
    return PromptedEncoder.from_pretrained(tiny_backbone(), directory, heads)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("reparameterization", REPARAMETERIZATIONS)
def test_save_load_gives_identical_outputs(tmp_path: Path, depth: str, reparameterization: str) -> None:
    backbone = tiny_backbone()
    model = trained_model(copy.deepcopy(backbone), depth=depth, reparameterization=reparameterization)
    model.save_pretrained(tmp_path)
    loaded = PromptedEncoder.from_pretrained(backbone, tmp_path, heads=nn.Linear(HIDDEN, 3)).eval()
    assert_same_outputs(model, loaded)
    assert torch.equal(loaded.heads.weight, model.heads.weight)
    assert loaded.config.reparameterization == reparameterization
    assert sorted(load_file(tmp_path / "adapter_model.safetensors")) == ["heads.bias", "heads.weight", "prompt_tables"]


@pytest.mark.parametrize("model_type", [name for name in ARCHITECTURES if name != "bert"])
@pytest.mark.parametrize("depth", DEPTHS)
def test_save_load_other_architectures(tmp_path: Path, model_type: str, depth: str) -> None:
    backbone = tiny_backbone(model_type)
    model = trained_model(copy.deepcopy(backbone), depth=depth)
    model.save_pretrained(tmp_path)
    assert_same_outputs(model, PromptedEncoder.from_pretrained(backbone, tmp_path, heads=nn.Linear(HIDDEN, 3)))


def test_save_writes_peft_layout_extra_files_and_no_temporary_files(tmp_path: Path) -> None:
    model = trained_model(tiny_backbone())
    model.save_pretrained(tmp_path, extra_files={"schema.json": {"name": "n2c2-2018"}, "labels.json": {"O": 0}})
    model.save_pretrained(tmp_path, extra_files={"schema.json": {"name": "n2c2-2018"}, "labels.json": {"O": 0}})
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["adapter_config.json", "adapter_model.safetensors", "labels.json", "schema.json"]


@pytest.mark.parametrize("name", ["../schema.json", "schema.yaml", "adapter_config.json"])
def test_extra_file_names_are_checked(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="extra file name"):
        trained_model(tiny_backbone()).save_pretrained(tmp_path, extra_files={name: {}})


def test_no_local_path_in_written_files(tmp_path: Path) -> None:
    local = tmp_path / "hospital-models" / "bert-ward"
    tiny_backbone().save_pretrained(local)
    backbone = AutoModel.from_pretrained(local)
    adapter = tmp_path / "adapter"
    trained_model(backbone).save_pretrained(adapter, extra_files={"schema.json": {"name": "n2c2-2018"}})
    for path in adapter.iterdir():
        content = path.read_bytes()
        assert str(tmp_path).encode() not in content and b"hospital-models" not in content, path.name
    assert load(adapter).config.base_model_name_or_path is None


def test_base_model_id_recorded_from_user_or_hub_name(tmp_path: Path) -> None:
    backbone = tiny_backbone()
    backbone.config._name_or_path = "org/tiny-bert"
    model = trained_model(backbone)
    model.save_pretrained(tmp_path / "a")
    model.save_pretrained(tmp_path / "b", base_model_id="UFNLP/gatortron-base")
    for directory, expected in (("a", "org/tiny-bert"), ("b", "UFNLP/gatortron-base")):
        loaded = PromptedEncoder.from_pretrained(tiny_backbone(), tmp_path / directory, nn.Linear(HIDDEN, 3))
        assert loaded.config.base_model_name_or_path == expected
    with pytest.raises(ValueError, match="not a hub id"):
        model.save_pretrained(tmp_path / "c", base_model_id=str(tmp_path / "models" / "bert"))


@pytest.mark.parametrize(
    ("model_type", "change", "attribute"),
    [
        ("roberta", {}, "model_type"),
        ("bert", {"hidden_size": 48}, "hidden_size"),
        ("bert", {"num_hidden_layers": 3}, "num_hidden_layers"),
        ("bert", {"vocab_size": 120}, "vocab_size"),
    ],
)
def test_incompatible_base_is_refused(tmp_path: Path, model_type: str, change: dict, attribute: str) -> None:
    trained_model(tiny_backbone(), depth="deep").save_pretrained(tmp_path)
    other = tiny_backbone(model_type, **change)
    with pytest.raises(AdapterCompatibilityError, match=f"{attribute} is .* in the adapter .* but .* in the base"):
        PromptedEncoder.from_pretrained(other, tmp_path, nn.Linear(HIDDEN, 3))


@pytest.mark.parametrize("keep", [0, 7, 0.5, 0.99])
def test_truncated_safetensors_is_a_format_error(saved_adapter: Path, keep: float) -> None:
    weights = saved_adapter / "adapter_model.safetensors"
    content = weights.read_bytes()
    weights.write_bytes(content[: int(keep * len(content)) if isinstance(keep, float) else keep])
    with pytest.raises(AdapterFormatError, match="adapter_model.safetensors: not a complete safetensors file"):
        load(saved_adapter)


def test_corrupt_config_is_a_format_error(saved_adapter: Path) -> None:
    (saved_adapter / "adapter_config.json").write_text('{"peft_type": "PROMPT_TUNING", "depth": ')
    with pytest.raises(AdapterFormatError, match="adapter_config.json: not valid JSON"):
        load(saved_adapter)


def test_invalid_config_value_is_a_format_error(saved_adapter: Path) -> None:
    path = saved_adapter / "adapter_config.json"
    path.write_text(path.read_text().replace('"depth": "input"', '"depth": "middle"'))
    with pytest.raises(AdapterFormatError, match="adapter_config.json: depth='middle'"):
        load(saved_adapter)


def test_newer_config_field_is_dropped_with_a_warning(saved_adapter: Path) -> None:
    path = saved_adapter / "adapter_config.json"
    path.write_text(path.read_text().replace('"depth": "input"', '"depth": "input", "field_from_a_later_version": 1'))
    with pytest.warns(UserWarning, match="field_from_a_later_version"):
        assert load(saved_adapter).config.depth == "input"


@pytest.mark.parametrize("name", ["adapter_config.json", "adapter_model.safetensors"])
def test_missing_file_is_a_format_error(saved_adapter: Path, name: str) -> None:
    (saved_adapter / name).unlink()
    with pytest.raises(AdapterFormatError, match=f"{name}: missing"):
        load(saved_adapter)


def test_pickle_weights_are_refused(saved_adapter: Path) -> None:
    weights = saved_adapter / "adapter_model.safetensors"
    weights.rename(saved_adapter / "adapter_model.bin")
    with pytest.raises(AdapterFormatError, match="adapter_model.bin: pickle weights are never loaded"):
        load(saved_adapter)


def test_tensor_of_wrong_shape_is_a_format_error(saved_adapter: Path) -> None:
    weights = saved_adapter / "adapter_model.safetensors"
    tensors = load_file(weights)
    tensors["prompt_tables"] = tensors["prompt_tables"][:, :3].contiguous()
    save_file(tensors, weights)
    with pytest.raises(AdapterFormatError, match=r"'prompt_tables' has shape \[2, 3, 32\], expected \[2, 4, 32\]"):
        load(saved_adapter)


def test_heads_that_do_not_match_are_a_format_error(saved_adapter: Path) -> None:
    with pytest.raises(AdapterFormatError, match=r"heads module .* unexpected \['heads.bias', 'heads.weight'\]"):
        load(saved_adapter, heads=nn.Identity())


# --- sizes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("reparameterization", REPARAMETERIZATIONS)
def test_size_from_config_matches_the_built_model(tmp_path: Path, reparameterization: str) -> None:
    config = prompt_config(depth="deep", reparameterization=reparameterization)
    model = PromptedEncoder(tiny_backbone("megatron-bert"), config, nn.Linear(HIDDEN, 3))
    model.freeze_backbone()
    report = parameter_report(model)
    head_parameters = 3 * HIDDEN + 3
    assert adapter_size_for(model.backbone.config, config, head_parameters=head_parameters) == report
    assert report["trainable_parameters"] == sum(p.numel() for p in model.prompts.parameters()) + head_parameters
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert report["adapter_bytes"] == sum(t.numel() * t.element_size() for t in tensors.values())
    assert math.isclose(report["trainable_share"], report["trainable_parameters"] / report["total_parameters"])


def test_minilm_deep_prompt_round_trip_and_size(tmp_path: Path, minilm_path: Path) -> None:
    backbone = AutoModel.from_pretrained(minilm_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    blocks = [f"block{index}" for index in range(9)]
    config = ClinicalPromptConfig(
        depth="deep", num_virtual_tokens=16, prompt_blocks=blocks, prompt_init="query",
        prompt_init_texts={name: f"find the {name} mentions" for name in blocks},
    )
    model = PromptedEncoder(copy.deepcopy(backbone), config, tokenizer=tokenizer).eval()
    model.freeze_backbone()
    report = parameter_report(model)
    assert adapter_size_for(backbone.config, config) == report
    assert report["trainable_parameters"] == 9 * 16 * 6 * 2 * 384
    model.save_pretrained(tmp_path)
    encoded = tokenizer(["Aspirin 81 mg daily.", "Metformin 500 mg twice daily."], padding=True, return_tensors="pt")
    block_ids = torch.tensor([0, 8])
    loaded = PromptedEncoder.from_pretrained(backbone, tmp_path)
    with torch.no_grad():
        expected = model(encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"], block_ids)
        actual = loaded(encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"], block_ids)
    assert torch.equal(actual, expected)


# --- training --------------------------------------------------------------------------------------

SPAN_TOKENS = (range(10, 15), range(15, 20))  # spans of block 0 and block 1
FILLER = (30, 60)


def synthetic_batch(generator: torch.Generator, rows: int, length: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Filler text with runs of 1-2 tokens from each block's subset; labels ``[2 blocks, rows, length]`` (IO)."""
    input_ids = torch.randint(*FILLER, (rows, length), generator=generator)
    input_ids[:, 0] = 2
    labels = torch.zeros(2, rows, length, dtype=torch.long)
    for row in range(rows):
        position = 1
        while position < length - 2:
            kind = int(torch.randint(3, (1,), generator=generator))
            if kind == 2:
                position += 1
                continue
            span = int(torch.randint(1, 3, (1,), generator=generator))
            subset = SPAN_TOKENS[kind]
            tokens = torch.randint(subset.start, subset.stop, (span,), generator=generator)
            input_ids[row, position : position + span] = tokens
            labels[kind, row, position : position + span] = 1
            position += span + 1
    return input_ids, labels


def spans(tags: torch.Tensor) -> set[tuple[int, int, int]]:
    """Exact spans ``(row, start, end)`` of maximal runs of tag 1."""
    found = set()
    for row, sequence in enumerate(tags.tolist()):
        start = None
        for position, tag in enumerate(sequence + [0]):
            if tag and start is None:
                start = position
            elif not tag and start is not None:
                found.add((row, start, position))
                start = None
    return found


def train_and_score(depth: str, reparameterization: str, blocks: int, steps: int) -> float:
    """Strict span F1 on held-out rows after training prompts and a linear head on a frozen random encoder."""
    hidden = 64
    backbone = tiny_backbone(hidden_size=hidden, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config = prompt_config(prompt_blocks=["a", "b"][:blocks], depth=depth, reparameterization=reparameterization)
    head = nn.Linear(hidden, 2)
    model = PromptedEncoder(backbone, config, head)
    model.freeze_backbone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        input_ids, labels = synthetic_batch(generator, 16)
        block_ids = torch.randint(blocks, (16,), generator=generator)
        logits = head(model(input_ids, torch.ones_like(input_ids), block_ids=block_ids))
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels[block_ids, torch.arange(16)].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    input_ids, labels = synthetic_batch(torch.Generator().manual_seed(99), 64)
    block_ids = torch.arange(64) % blocks
    with torch.no_grad():
        predicted = spans(head(model(input_ids, torch.ones_like(input_ids), block_ids=block_ids)).argmax(-1))
    gold = spans(labels[block_ids, torch.arange(64)])
    return 2 * len(gold & predicted) / (len(gold) + len(predicted))


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("reparameterization", REPARAMETERIZATIONS)
def test_training_reaches_exact_spans(depth: str, reparameterization: str) -> None:
    assert train_and_score(depth, reparameterization, blocks=1, steps=60) == 1.0


def test_deep_prompt_blocks_learn_different_questions() -> None:
    """Same texts, same head: only the row's prompt block says which subset to extract."""
    assert train_and_score("deep", "mlp", blocks=2, steps=150) == 1.0
