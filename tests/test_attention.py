"""Eager and SDPA attention give the same outputs and gradients, with and without deep prompts, with padding.

Covers transformers' own SDPA (BERT, RoBERTa) and ours (Megatron-BERT, MPNet, DeBERTa-v2 and -v3 shapes).
float32: equal to 1e-5. bfloat16: SDPA's error against the float32 result is at most 1.5x eager's plus 0.01.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModel, BertConfig

from clinical_prompt.backbone import enable_activation_checkpointing, load_backbone
from clinical_prompt.prompts import ClinicalPromptConfig, PromptedEncoder
from clinical_prompt.prompts.attention import SDPA_SELF_ATTENTION, use_sdpa_attention
from clinical_prompt.prompts.deep import attach_deep_prompts
from clinical_prompt.training import TrainingConfig, train
from test_prompt_injection import CONFIGS, TINY, random_ids, random_past, tiny_model

TEXT_MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0, 0]])
PREFIX_MASK = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1]])


def eager_and_sdpa(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    eager, sdpa = tiny_model(name, "eager"), tiny_model(name, "sdpa")
    sdpa.load_state_dict(eager.state_dict())
    return eager, sdpa


def run(model, text_ids, past=None) -> torch.Tensor:
    """Last hidden states of the unpadded text tokens, with deep prompts ``past`` (and ``PREFIX_MASK``) if given."""
    if past is None:
        hidden = model(input_ids=text_ids, attention_mask=TEXT_MASK).last_hidden_state
    else:
        with attach_deep_prompts(model).prefixes(past, PREFIX_MASK):
            hidden = model(input_ids=text_ids, attention_mask=TEXT_MASK).last_hidden_state
    return hidden[TEXT_MASK.bool()]


def probe_loss(hidden: torch.Tensor) -> torch.Tensor:
    """A loss whose gradient is not zero (a sum of squares of layer-normed states is nearly constant)."""
    return (hidden * torch.randn(hidden.shape, generator=torch.Generator().manual_seed(2))).sum()


def counting_sdpa(monkeypatch) -> list[int]:
    """Count calls of ``torch.nn.functional.scaled_dot_product_attention`` (how both SDPA paths reach it)."""
    calls, original = [], F.scaled_dot_product_attention

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counted)
    return calls


@pytest.mark.parametrize("deep", [False, True], ids=["plain", "deep-prompts"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_sdpa_equals_eager_in_float32(name, deep, monkeypatch):
    eager, sdpa = eager_and_sdpa(name)
    text_ids = random_ids(eager, 3, 7, TEXT_MASK)
    past = random_past(attach_deep_prompts(eager), 3, 4) if deep else None
    with torch.no_grad():
        expected = run(eager, text_ids, past)
        calls = counting_sdpa(monkeypatch)
        actual = run(sdpa, text_ids, past)
    assert len(calls) == TINY["num_hidden_layers"]  # SDPA ran in every layer, no eager fallback
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("deep", [False, True], ids=["full-fine-tuning", "frozen-deep-prompts"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_sdpa_gradients_equal_eager(name, deep):
    """Frozen backbone: prefix gradients; full fine-tuning: every weight's gradient."""
    gradients = []
    for model in eager_and_sdpa(name):
        model.requires_grad_(not deep)
        torch.manual_seed(1)
        past = random_past(attach_deep_prompts(model), 3, 4, requires_grad=True) if deep else None
        probe_loss(run(model, random_ids(model, 3, 7, TEXT_MASK), past)).backward()
        leaves = [tensor for pair in past for tensor in pair] if deep else list(model.parameters())
        gradients.append([leaf.grad for leaf in leaves if leaf.grad is not None])
    eager_grads, sdpa_grads = gradients
    assert len(eager_grads) == len(sdpa_grads) > 0
    for expected, actual in zip(eager_grads, sdpa_grads):
        assert (actual - expected).norm() <= 1e-5 * expected.norm() + 1e-7


@pytest.mark.parametrize("name", list(CONFIGS))
def test_sdpa_in_bfloat16_is_as_close_to_float32_as_eager(name):
    eager, sdpa = eager_and_sdpa(name)
    text_ids = random_ids(eager, 3, 7, TEXT_MASK)
    past = random_past(attach_deep_prompts(eager), 3, 4)
    with torch.no_grad():
        reference = run(eager, text_ids, past)
        errors = [(run(model.to(torch.bfloat16), text_ids, past).float() - reference).abs().max()
                  for model in (eager, sdpa)]
    assert errors[1] <= 1.5 * errors[0] + 0.01, f"bf16 max error: eager {errors[0]:.4f}, SDPA {errors[1]:.4f}"


def test_use_sdpa_attention_keeps_weights_and_reports_sdpa():
    config = CONFIGS["megatron-bert"]()
    eager = AutoModel.from_config(config)
    names = list(eager.state_dict())
    use_sdpa_attention(eager)
    assert eager.config._attn_implementation == eager.encoder.config._attn_implementation == "sdpa"
    assert config._attn_implementation == "eager"  # the caller's config still builds stock models
    AutoModel.from_config(config)
    assert list(eager.state_dict()) == names
    layers = [module for module in eager.modules() if isinstance(module, SDPA_SELF_ATTENTION["megatron-bert"])]
    assert len(layers) == TINY["num_hidden_layers"]
    with pytest.raises(ValueError, match="'bert'.*attn_implementation='sdpa'"):
        use_sdpa_attention(AutoModel.from_config(BertConfig(**TINY)))


def test_output_attentions_warns_and_returns_no_weights():
    model = tiny_model("megatron-bert", "sdpa")
    with pytest.warns(UserWarning, match="no attention weights"):
        output = model(input_ids=random_ids(model, 1, 5), output_attentions=True)
    assert all(weights is None for weights in output.attentions)


def test_load_backbone_uses_sdpa_by_default(tmp_path):
    torch.manual_seed(0)
    AutoModel.from_config(CONFIGS["megatron-bert"]()).save_pretrained(tmp_path)
    default, eager = load_backbone(tmp_path), load_backbone(tmp_path, attn_implementation="eager")
    assert default.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    assert default.pooler is None
    text_ids = random_ids(eager, 3, 7, TEXT_MASK)
    with torch.no_grad():
        torch.testing.assert_close(run(default.eval(), text_ids), run(eager.eval(), text_ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["bert", "megatron-bert", "deberta-v3"])
def test_activation_checkpointing_keeps_deep_prompt_gradients(name):
    """Backward runs after the prompt context closed; recomputation must put the prefixes back."""
    gradients = []
    for checkpointing in (False, True):
        model = tiny_model(name, "sdpa").train().requires_grad_(False)
        if checkpointing:
            enable_activation_checkpointing(model)
        torch.manual_seed(1)
        past = random_past(attach_deep_prompts(model), 3, 4, requires_grad=True)
        probe_loss(run(model, random_ids(model, 3, 7, TEXT_MASK), past)).backward()
        gradients.append([tensor.grad for pair in past for tensor in pair])
    for expected, actual in zip(*gradients):
        torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-5)


class PromptTagger(nn.Module):
    """A frozen backbone with deep prompts (two blocks) and a token classification head; returns a loss."""

    def __init__(self, backbone: nn.Module, labels: int = 3) -> None:
        super().__init__()
        config = ClinicalPromptConfig(num_virtual_tokens=4, prompt_blocks=["a", "b"], depth="deep")
        head = nn.Linear(backbone.config.hidden_size, labels)
        self.encoder = PromptedEncoder(backbone.requires_grad_(False), config, head)

    def forward(self, input_ids, attention_mask, block_ids, labels) -> dict[str, torch.Tensor]:
        logits = self.encoder.heads(self.encoder(input_ids, attention_mask, block_ids=block_ids))
        return {"loss": F.cross_entropy(logits[attention_mask.bool()], labels[attention_mask.bool()])}


def tagging_rows(vocab_size: int, rows: int = 12, length: int = 7) -> list[dict[str, torch.Tensor]]:
    """Token labels a prompt can learn: a token's label depends on its id and its row's prompt block."""
    generator = torch.Generator().manual_seed(3)
    data = []
    for row in range(rows):
        ids = torch.randint(3, vocab_size, (length,), generator=generator)
        mask = (torch.arange(length) < length - row % 3).long()
        data.append({"input_ids": ids, "attention_mask": mask, "block_ids": torch.tensor(row % 2),
                     "labels": (ids + row % 2) % 3})
    return data


def test_training_with_activation_checkpointing_matches_training_without(tmp_path):
    tables = []
    for checkpointing in (False, True):
        model = PromptTagger(tiny_model("megatron-bert", "sdpa"))
        config = TrainingConfig(output_dir=tmp_path / str(checkpointing), num_epochs=2, learning_rate=1e-2,
                                save_every_epoch=False, activation_checkpointing=checkpointing)
        train(model, tagging_rows(model.encoder.backbone.config.vocab_size), config=config,
              collate_fn=torch.utils.data.default_collate)
        assert model.encoder.backbone.encoder.gradient_checkpointing == checkpointing
        tables.append(model.encoder.prompts.materialize().detach())
    torch.testing.assert_close(tables[1], tables[0], atol=1e-6, rtol=1e-5)
