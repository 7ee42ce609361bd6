"""8-bit and 4-bit frozen backbones (bitsandbytes) on the CPU backend: a deep prompt trains on them, the weights
stay frozen and quantized, and the adapter loads back onto the full-precision base."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from transformers import AutoModel

from clinical_prompt.backbone import load_backbone
from clinical_prompt.extractors import load_extractor
from clinical_prompt.prompts import PromptedEncoder
from clinical_prompt.quantization import QUANTIZATIONS, is_quantized, quantize_backbone
from clinical_prompt.training import TrainingConfig, train
from test_attention import PromptTagger, tagging_rows
from test_prompt_injection import CONFIGS, random_ids, tiny_model
from test_recipes_runs import run, save_tiny_minilm

bnb = pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.filterwarnings("ignore:MatMul8bitLt")

QUANTIZED_DTYPES = {"8bit": torch.int8, "4bit": torch.uint8}


@pytest.fixture(scope="module", autouse=True)
def cpu_backend() -> None:
    """Skip where this bitsandbytes cannot run Linear8bitLt / Linear4bit forward and backward on the CPU."""
    for quantization in QUANTIZATIONS:
        try:
            layer = quantize_backbone(nn.Sequential(nn.Linear(8, 4)), quantization, device="cpu")
            inputs = torch.randn(2, 8, requires_grad=True)
            layer(inputs).sum().backward()
            assert inputs.grad is not None and inputs.grad.abs().sum() > 0
        except Exception as error:  # any failure of the backend means: not available here
            pytest.skip(f"bitsandbytes {bnb.__version__} has no working CPU backend for {quantization}: {error!r}")


def quantized_megatron(quantization: str) -> nn.Module:
    return quantize_backbone(tiny_model("megatron-bert", "sdpa"), quantization)


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_linear_layers_are_quantized_and_the_rest_keeps_its_precision(quantization):
    full, model = tiny_model("megatron-bert", "sdpa"), quantized_megatron(quantization)
    assert is_quantized(model) and not is_quantized(full)
    assert not any(type(module) is nn.Linear for module in model.modules())
    assert model.encoder.layer[0].attention.self.key.weight.dtype == QUANTIZED_DTYPES[quantization]
    assert model.embeddings.word_embeddings.weight.dtype == model.encoder.ln.weight.dtype == torch.float32
    assert not any(parameter.requires_grad for parameter in model.parameters())
    ids = random_ids(full, 2, 6)
    with torch.no_grad():
        expected, actual = (m(input_ids=ids).last_hidden_state for m in (full, model))
    assert torch.nn.functional.cosine_similarity(actual, expected, dim=-1).min() > 0.9


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_prompt_trains_on_quantized_backbone_and_loads_onto_full_precision(quantization, tmp_path):
    model = PromptTagger(quantized_megatron(quantization))
    frozen = {name: tensor.clone() for name, tensor in model.encoder.backbone.state_dict().items()}
    initial_tables = model.encoder.prompts.materialize().detach().clone()
    rows = tagging_rows(model.encoder.backbone.config.vocab_size)
    config = TrainingConfig(output_dir=tmp_path / "run", num_epochs=4, learning_rate=3e-2, save_every_epoch=False)
    result = train(model, rows, config=config, collate_fn=torch.utils.data.default_collate)

    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    after = model.encoder.backbone.state_dict()
    assert all(torch.equal(after[name], tensor) for name, tensor in frozen.items())
    tables = model.encoder.prompts.materialize().detach()
    assert tables.dtype == model.encoder.heads.weight.dtype == torch.float32
    assert not torch.equal(tables, initial_tables)

    model.encoder.save_pretrained(tmp_path / "adapter")
    full = PromptTagger(tiny_model("megatron-bert", "sdpa"))
    full.encoder = PromptedEncoder.from_pretrained(
        full.encoder.backbone, tmp_path / "adapter", heads=nn.Linear(full.encoder.backbone.config.hidden_size, 3)
    )
    assert not is_quantized(full.encoder.backbone)
    torch.testing.assert_close(full.encoder.prompts.materialize(), tables)
    torch.testing.assert_close(full.encoder.heads.weight, model.encoder.heads.weight)
    batch = torch.utils.data.default_collate(rows)
    with torch.no_grad():
        loss_on_full_precision = full.eval()(**batch)["loss"].item()
    assert loss_on_full_precision < result.history[0]["train_loss"]


def test_load_backbone_quantizes_and_keeps_sdpa(tmp_path):
    torch.manual_seed(0)
    AutoModel.from_config(CONFIGS["megatron-bert"]()).save_pretrained(tmp_path)
    model = load_backbone(tmp_path, quantization="4bit")
    assert is_quantized(model) and model.pooler is None
    assert model.config._attn_implementation == "sdpa"
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"
    assert model.encoder.layer[0].attention.self.query.weight.device.type == expected_device


def test_quantize_refuses_unknown_kinds_and_prompted_backbones():
    with pytest.raises(ValueError, match="8bit, 4bit; got '3bit'"):
        quantize_backbone(tiny_model("bert"), "3bit")
    model = PromptTagger(tiny_model("bert")).encoder.backbone
    with pytest.raises(ValueError, match="before attaching deep prompts"):
        quantize_backbone(model, "8bit")


@pytest.mark.parametrize("width", [32, 384])
def test_a_4bit_layer_trains_the_same_after_an_eval_forward(width):
    """Prompt initialization and dev scoring run the backbone in eval mode between training steps."""
    torch.manual_seed(0)
    layer = quantize_backbone(nn.Sequential(nn.Linear(width, width)), "4bit", device="cpu")
    inputs = torch.randn(3, 5, width)

    def input_grad() -> torch.Tensor:
        x = inputs.clone().requires_grad_(True)
        layer(x).square().sum().backward()
        return x.grad

    before = input_grad()
    layer.eval()
    with torch.no_grad():
        evaluated = layer(inputs)
    layer.train()
    assert torch.allclose(evaluated, layer(inputs).detach())
    assert torch.equal(input_grad(), before)


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_the_train_recipe_trains_a_frozen_prompt_on_a_quantized_backbone(quantization, tmp_path, minilm_path,
                                                                         monkeypatch):
    import clinical_prompt.extractors.mrc.extractor as mrc

    tiny_backbone = save_tiny_minilm(tmp_path / "backbone", minilm_path)

    loaded = []

    def spy(*args, **kwargs):
        model = load_backbone(*args, **kwargs)
        loaded.append(is_quantized(model))
        return model

    monkeypatch.setattr(mrc, "load_backbone", spy)
    summary = run("train", "tiny-train.yaml", tmp_path / "run", f"model.backbone={tiny_backbone}",
                  f"model.quantization={quantization}")
    assert loaded == [True] and summary["config"]["model"]["quantization"] == quantization
    monkeypatch.undo()
    adapter = load_extractor(tmp_path / "run" / "model", backbone=str(tiny_backbone))  # onto the full-precision base
    assert not is_quantized(adapter.encoder.backbone)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["documents"]["gold"] == 2
