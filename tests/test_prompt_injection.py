"""Tests for deep (per-layer key/value) prompts and input-layer prompts on tiny random encoders."""
from __future__ import annotations

from functools import partial

import pytest
import torch
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    DebertaV2Config,
    DistilBertConfig,
    MegatronBertConfig,
    MPNetConfig,
    RobertaConfig,
)

from clinical_prompt.prompts.attention import SDPA_SELF_ATTENTION, use_sdpa_attention
from clinical_prompt.prompts.deep import _extend_mask, attach_deep_prompts
from clinical_prompt.prompts.inputs import embed_with_prompts

TINY = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
RELATIVE = dict(relative_attention=True, pos_att_type=["p2c", "c2p"], max_relative_positions=16)
CONFIGS = {
    "bert": lambda: BertConfig(**TINY, type_vocab_size=2),
    "roberta": lambda: RobertaConfig(**TINY, pad_token_id=1, type_vocab_size=1),
    "megatron-bert": lambda: MegatronBertConfig(**TINY, type_vocab_size=2),
    "mpnet": lambda: MPNetConfig(**TINY),
    # DeBERTa-v3 shape: shared position keys, log buckets, no absolute positions
    "deberta-v3": lambda: DebertaV2Config(
        **TINY, **RELATIVE, share_att_key=True, position_buckets=8, position_biased_input=False,
        norm_rel_ebd="layer_norm",
    ),
    # DeBERTa-v2 shape: own position projections, absolute positions, token types
    "deberta-v2": lambda: DebertaV2Config(**TINY, **RELATIVE, type_vocab_size=2),
    "deberta-v2-absolute": lambda: DebertaV2Config(**TINY, type_vocab_size=2),
}
ABSOLUTE = ["bert", "roberta", "megatron-bert", "deberta-v2-absolute"]  # no relative terms from sequence index
CASES = [(name, impl) for name in CONFIGS for impl in ("eager", "sdpa")]


def tiny_model(name: str, impl: str = "eager") -> torch.nn.Module:
    """A seeded tiny encoder; ``impl="sdpa"`` uses transformers' SDPA or, where it has none, ours."""
    torch.manual_seed(0)
    config = CONFIGS[name]()
    ours = impl == "sdpa" and config.model_type in SDPA_SELF_ATTENTION
    model = AutoModel.from_config(config, attn_implementation="eager" if ours else impl)
    if ours:
        use_sdpa_attention(model)
    return model.eval()


def random_ids(model: torch.nn.Module, rows: int, length: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    ids = torch.randint(3, model.config.vocab_size, (rows, length))
    if mask is not None:
        ids = ids.masked_fill(mask == 0, model.config.pad_token_id)
    return ids


def random_past(handle, rows: int, prefix_len: int, requires_grad: bool = False) -> list[tuple]:
    return [
        tuple(torch.randn(rows, prefix_len, handle.kv_size, requires_grad=requires_grad) for _ in range(2))
        for _ in range(handle.num_layers)
    ]


def projections_of_joint_run(model, handle, input_ids, attention_mask, position_ids):
    """Run ``model`` and capture every layer's key and value projection outputs (first call per module)."""
    captured = {}

    def capture(slot, module, args, output) -> None:
        captured.setdefault(slot, output)  # DeBERTa-v3 also projects its position embeddings with the key

    hooks = [
        module.register_forward_hook(partial(capture, (layer, kind)))
        for layer, site in enumerate(handle.layers)
        for kind, module in (("key", site.key), ("value", site.value))
    ]
    try:
        output = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, output_hidden_states=True
        )
    finally:
        for hook in hooks:
            hook.remove()
    return output, captured


def assert_prefix_equals_joint_run(model, prefix_ids, prefix_mask, text_ids, text_mask) -> None:
    """A deep prompt holding the joint run's prefix keys/values reproduces the joint run's text states."""
    handle = attach_deep_prompts(model)
    rows, prefix_len = prefix_ids.shape
    positions = torch.arange(prefix_len + text_ids.shape[1]).expand(rows, -1) + 2
    joint_mask = torch.cat([torch.ones_like(prefix_ids) if prefix_mask is None else prefix_mask, text_mask], 1)
    joint, kv = projections_of_joint_run(model, handle, torch.cat([prefix_ids, text_ids], 1), joint_mask, positions)
    past = [(kv[layer, "key"][:, :prefix_len], kv[layer, "value"][:, :prefix_len]) for layer in range(len(kv) // 2)]
    with torch.no_grad(), handle.prefixes(past, prefix_mask):
        alone = model(
            input_ids=text_ids, attention_mask=text_mask, position_ids=positions[:, prefix_len:],
            output_hidden_states=True,
        )
    valid = text_mask.bool()
    assert len(alone.hidden_states) == len(joint.hidden_states) == handle.num_layers + 1
    for joint_states, alone_states in zip(joint.hidden_states, alone.hidden_states):
        assert alone_states.shape == (rows, text_ids.shape[1], model.config.hidden_size)
        torch.testing.assert_close(alone_states[valid], joint_states[:, prefix_len:][valid], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("padding", ["none", "prefix", "both"])
@pytest.mark.parametrize(("name", "impl"), CASES)
def test_deep_prompt_equals_joint_run(name, impl, padding):
    model = tiny_model(name, impl)
    text_mask = torch.ones(3, 7, dtype=torch.long)
    prefix_mask = None
    if padding != "none":
        prefix_mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1], [1, 0, 1, 0]])
    if padding == "both":
        text_mask[1, 5:] = 0
        text_mask[2, 3:] = 0
    prefix_ids = random_ids(model, 3, 4)
    with torch.no_grad():
        assert_prefix_equals_joint_run(model, prefix_ids, prefix_mask, random_ids(model, 3, 7, text_mask), text_mask)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_deep_prompt_equals_joint_run_minilm(minilm_path, impl):
    model = AutoModel.from_pretrained(minilm_path, attn_implementation=impl).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    prefix = tokenizer(["find the drug names", "dosage and route"], add_special_tokens=False, padding=True,
                       return_tensors="pt")
    prefix_mask = prefix.attention_mask.flip(1)  # shorter prompts padded on the left
    prefix_ids = prefix.input_ids.gather(1, prefix_mask.cumsum(1).sub(1).clamp(min=0))
    text = tokenizer(["Aspirin 81 mg daily.", "Metformin 500 mg by mouth twice a day."], padding=True,
                     return_tensors="pt")
    with torch.no_grad():
        assert_prefix_equals_joint_run(model, prefix_ids, prefix_mask, text.input_ids, text.attention_mask)


@pytest.mark.parametrize(("name", "impl"), CASES)
def test_rows_with_different_prefixes_equal_rows_run_alone(name, impl):
    """Each row carries its own prefix; a shorter one, padded on the left, equals its unpadded run."""
    model = tiny_model(name, impl)
    handle = attach_deep_prompts(model)
    text_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    text_ids = random_ids(model, 2, 6, text_mask)
    past = random_past(handle, 2, 5)
    prefix_mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    with torch.no_grad():
        with handle.prefixes(past, prefix_mask):
            batch = model(input_ids=text_ids, attention_mask=text_mask).last_hidden_state
        for row, start in ((0, 0), (1, 2)):
            row_past = [(key[row : row + 1, start:], value[row : row + 1, start:]) for key, value in past]
            with handle.prefixes(row_past):
                alone = model(input_ids=text_ids[row : row + 1], attention_mask=text_mask[row : row + 1])
            valid = text_mask[row].bool()
            torch.testing.assert_close(batch[row, valid], alone.last_hidden_state[0, valid], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("name", "impl"), CASES)
def test_backbone_is_stock_outside_the_context(name, impl):
    model = tiny_model(name, impl)
    text_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    text_ids = random_ids(model, 2, 5, text_mask)
    with torch.no_grad():
        before = model(input_ids=text_ids, attention_mask=text_mask).last_hidden_state
        handle = attach_deep_prompts(model)
        past = random_past(handle, 2, 3)
        with handle.prefixes(past):
            prompted = model(input_ids=text_ids, attention_mask=text_mask).last_hidden_state
        with pytest.raises(KeyError), handle.prefixes(past):
            raise KeyError("leaves the context early")
        after = model(input_ids=text_ids, attention_mask=text_mask).last_hidden_state
    assert not torch.allclose(prompted, before)
    assert torch.equal(after, before)


@pytest.mark.parametrize(("name", "impl"), CASES)
def test_gradients_reach_prefixes_not_frozen_backbone(name, impl):
    model = tiny_model(name, impl).requires_grad_(False)
    handle = attach_deep_prompts(model)
    past = random_past(handle, 2, 3, requires_grad=True)
    text_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with handle.prefixes(past, prefix_mask=torch.tensor([[1, 1, 1], [0, 1, 1]])):
        output = model(input_ids=random_ids(model, 2, 4, text_mask), attention_mask=text_mask).last_hidden_state
        output.pow(2).sum().backward()
    for key, value in past:
        for tensor in (key, value):
            assert tensor.grad is not None and tensor.grad.abs().sum() > 0
            assert tensor.grad[1, 0].abs().sum() == 0  # masked prefix position
    assert all(parameter.grad is None for parameter in model.parameters())


def test_attach_is_idempotent_and_rejects_misuse():
    model = tiny_model("bert")
    handle = attach_deep_prompts(model)
    assert attach_deep_prompts(model) is handle
    assert (handle.num_layers, handle.kv_size) == (2, 32)
    ids = random_ids(model, 2, 4)
    with pytest.raises(ValueError, match="2 \\(key, value\\) pairs"), handle.prefixes(random_past(handle, 2, 3)[:1]):
        pass
    with pytest.raises(ValueError, match="prefix_mask"), handle.prefixes(random_past(handle, 2, 3), torch.ones(2, 4)):
        pass
    with handle.prefixes(random_past(handle, 3, 3)), pytest.raises(ValueError, match="3 rows but the batch has 2"):
        model(input_ids=ids)
    with handle.prefixes(random_past(handle, 2, 3)):
        with pytest.raises(RuntimeError, match="already active"), handle.prefixes(random_past(handle, 2, 3)):
            pass


def test_flash_style_mask_gains_prefix_columns():
    """FlashAttention takes a [batch, keys] mask (its GPU path cannot run here)."""
    extended = _extend_mask(torch.tensor([[1, 1, 0], [1, 1, 1]]), torch.tensor([[False, True], [True, True]]), True)
    assert extended.tolist() == [[0, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


def test_unsupported_architecture_is_named():
    model = AutoModel.from_config(DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=37))
    with pytest.raises(ValueError, match="'distilbert'.*supported: bert"):
        attach_deep_prompts(model)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_input_prompts_are_stripped_and_match_manual_layout(name):
    model = tiny_model(name)
    rows, length, prompt_len = 2, 6, 3
    text_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    text_ids = random_ids(model, rows, length, text_mask)
    prompt = torch.randn(rows, prompt_len, model.get_input_embeddings().embedding_dim)
    prefix_mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    with torch.no_grad():
        hidden = embed_with_prompts(model, text_ids, text_mask, prompt, prefix_mask=prefix_mask)
        # manual: [text; prompt] reordered to [first token, prompt, rest]; the prompt takes the first token's position
        order = [0, *range(length, length + prompt_len), *range(1, length)]
        plain_positions = model.embeddings.position_ids[:, :length].expand(rows, -1)
        if name in ("roberta", "mpnet"):  # positions count non-padding tokens from padding_idx + 1
            plain_positions = text_mask.cumsum(1) * text_mask + model.config.pad_token_id
        embeds = torch.cat([model.get_input_embeddings()(text_ids), prompt], 1)[:, order]
        positions = torch.cat([plain_positions, plain_positions[:, :1].expand(rows, prompt_len)], 1)[:, order]
        mask = torch.cat([text_mask, prefix_mask], 1)[:, order]
        manual = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state
    assert hidden.shape == (rows, length, model.config.hidden_size)
    torch.testing.assert_close(hidden, manual[:, [0, *range(1 + prompt_len, length + prompt_len)]])


@pytest.mark.parametrize("name", ABSOLUTE)
def test_masked_input_prompt_leaves_text_as_without_prompt(name):
    """Text positions and token types are not shifted: a fully masked prompt changes nothing."""
    model = tiny_model(name)
    text_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    text_ids = random_ids(model, 2, 6, text_mask)
    token_types = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0]]) if model.config.type_vocab_size > 1 else None
    prompt = torch.randn(2, 4, model.config.hidden_size)
    with torch.no_grad():
        hidden = embed_with_prompts(model, text_ids, text_mask, prompt, token_types, prefix_mask=torch.zeros(2, 4))
        plain = model(input_ids=text_ids, attention_mask=text_mask, token_type_ids=token_types).last_hidden_state
    valid = text_mask.bool()
    torch.testing.assert_close(hidden[valid], plain[valid], atol=1e-5, rtol=1e-5)


def test_input_prompt_gradients_and_deep_prompts_together():
    model = tiny_model("bert").requires_grad_(False)
    handle = attach_deep_prompts(model)
    prompt = torch.randn(2, 3, 32, requires_grad=True)
    past = random_past(handle, 2, 2, requires_grad=True)
    text_ids = random_ids(model, 2, 5)
    with handle.prefixes(past):
        hidden = embed_with_prompts(model, text_ids, torch.ones_like(text_ids), prompt)
        hidden.sum(-1).pow(2).sum().backward()
    assert hidden.shape == (2, 5, 32)
    assert prompt.grad.abs().sum() > 0 and past[0][0].grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "impl"), CASES)
def test_attention_returns_contiguous_text_rows(name, impl):
    """A strided context would reach the output projection through a matmul path that depends on whether its weight
    requires grad, so frozen and trainable backbones would round differently."""
    model = tiny_model(name, impl)
    handle = attach_deep_prompts(model)
    contexts = []
    text_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with torch.no_grad(), handle.prefixes(random_past(handle, 2, 3)):
        hooks = [site.attention.register_forward_hook(lambda module, args, output: contexts.append(output[0]))
                 for site in handle.layers]
        model(input_ids=random_ids(model, 2, 4, text_mask), attention_mask=text_mask)
    for hook in hooks:
        hook.remove()
    assert len(contexts) == handle.num_layers
    assert all(context.shape[1] == 4 and context.is_contiguous() for context in contexts)
