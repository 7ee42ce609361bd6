"""8-bit and 4-bit frozen backbones through bitsandbytes (``pip install 'clinical-prompt[quant]'``).

:func:`quantize_backbone` replaces every ``nn.Linear`` of an encoder by bitsandbytes' ``Linear8bitLt`` (LLM.int8)
or ``Linear4bit`` (NF4, double-quantized statistics) holding the same weights, and freezes the encoder. Embeddings
and layer norms keep their precision; prompt tables and task heads live outside the backbone and stay in full
precision. Gradients still flow through the quantized layers to their inputs, so input-layer and deep prompts train
on a quantized backbone. An adapter holds no backbone weights: one trained on a quantized backbone loads onto the
full-precision base like any other.
"""
from __future__ import annotations

from types import ModuleType

import torch
from torch import nn

QUANTIZATIONS = ("8bit", "4bit")


def _bitsandbytes() -> ModuleType:
    try:
        import bitsandbytes
    except ImportError as error:
        message = "8-bit and 4-bit backbones need bitsandbytes: pip install 'clinical-prompt[quant]'"
        raise ImportError(message) from error
    return bitsandbytes


def quantize_backbone(
    model: nn.Module, quantization: str, *, device: torch.device | str | None = None,
    compute_dtype: torch.dtype | None = None,
) -> nn.Module:
    """Quantize the linear layers of ``model`` in place (``"8bit"`` or ``"4bit"``) and freeze it.

    Each layer is quantized onto ``device`` (default: where it is). 4-bit layers compute in ``compute_dtype``
    (default: the layer's weight dtype). Quantize before attaching prompts: deep prompts hook the projections.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}; got {quantization!r}")
    if "_deep_prompt_handle" in model.__dict__:
        raise ValueError("quantize the backbone before attaching deep prompts to it")
    bnb = _bitsandbytes()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, _quantized(bnb, child, quantization, device, compute_dtype))
    return model.requires_grad_(False)


def _quantized(
    bnb: ModuleType, linear: nn.Linear, quantization: str, device: torch.device | str | None,
    compute_dtype: torch.dtype | None,
) -> nn.Module:
    """A bitsandbytes layer with ``linear``'s weights, quantized on the move to ``device``."""
    device = torch.device(device) if device is not None else linear.weight.device
    weight = linear.weight.detach().cpu()  # bitsandbytes quantizes 8-bit weights when they leave the CPU
    shape = (linear.in_features, linear.out_features)
    has_bias = linear.bias is not None
    if quantization == "8bit":
        layer = bnb.nn.Linear8bitLt(*shape, bias=has_bias, has_fp16_weights=False, threshold=6.0, device="meta")
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        layer = bnb.nn.Linear4bit(
            *shape, bias=has_bias, compute_dtype=compute_dtype or weight.dtype, quant_type="nf4", device="meta"
        )
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4", module=layer)
        # On a CPU with AVX512-BF16 the first eval-mode forward repacks the weights for inference, and training
        # after that (as after prompt initialization or dev scoring) fails; keep the one layout that trains.
        layer.support_avx512bf16_for_cpu = False
    if has_bias:
        layer.bias = nn.Parameter(linear.bias.detach().cpu(), requires_grad=False)
    return layer.to(device)


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds bitsandbytes 8-bit or 4-bit linear layers."""
    return any(type(module).__module__.startswith("bitsandbytes") for module in model.modules())
