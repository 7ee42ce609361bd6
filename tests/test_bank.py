"""AdapterBank: adapters of mixed depth, length and schema on one base, their rows in one forward pass.

Adapters are random-initialized ``soft-prompt-frozen`` extractors on a tiny random BERT whose vocabulary holds the
words of a few MACCROBAT notes, saved with ``save_pretrained``; every mixed-batch result is compared with the same
adapter run alone.
"""
from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from clinical_prompt import AdapterBank, load_adapter
from clinical_prompt.brat import Document, format_ann, read_corpus
from clinical_prompt.extractors import ExtractorFormatError, build_extractor, load_extractor
from clinical_prompt.prompts import AdapterCompatibilityError, AdapterFormatError, ClinicalPromptConfig
from clinical_prompt.quickstart import BUNDLED_CORPUS
from clinical_prompt.schema import TaskSchema, load_schema
from conftest import save_tiny_bert

SCHEMAS = {
    "maccrobat-med": load_schema("maccrobat-med"),
    "meds": TaskSchema.from_dict({
        "name": "meds",
        "concepts": [{"name": "Drug", "query": "Which drugs?"}, {"name": "Dosage", "query": "Which doses?"}],
        "relations": [{"name": "Dosage-Drug", "head": "Drug", "tails": ["Dosage"], "query": "Dose of {head}?",
                       "head_arg": "Arg2"}],
    }),
    "problems": TaskSchema.from_dict({
        "name": "problems",
        "concepts": [{"name": "SignSymptom", "query": "Which symptoms?"}, {"name": "Disease", "query": "Which?"},
                     {"name": "Test", "query": "Which tests?"}],
    }),
}
# (depth, virtual tokens, schema, start layer) of adapter i, cycled: input-layer, deep and late prompts (from layer 1
# of 2), 1 to 16 tokens, three schemas
SHAPES = [("deep", 4, "maccrobat-med", 1), ("input", 2, "problems", 0), ("deep", 16, "meds", 0),
          ("input", 9, "maccrobat-med", 0), ("deep", 1, "problems", 0), ("input", 16, "meds", 0),
          ("deep", 7, "problems", 1), ("input", 1, "meds", 0)]
THRESHOLD = 0.55  # random span heads: low enough for entities and relations in every note, few enough to stay fast
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def notes() -> list[Document]:
    """The four shortest MACCROBAT notes, without their annotations."""
    documents = read_corpus(BUNDLED_CORPUS, collect_problems=True).documents
    return [Document(doc.doc_id, doc.text) for doc in sorted(documents, key=lambda d: len(d.text))[:4]]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, notes) -> Path:
    words = sorted({word.lower() for doc in notes for word in re.findall(r"[A-Za-z]+|\d", doc.text)})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[", "]", *".,;:()-/%'+=<>?", *words]
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), vocab, hidden_size=32, num_attention_heads=2,
                          max_position_embeddings=128)


def save_adapter(directory: Path, base: Path, index: int) -> Path:
    depth, tokens, schema, start = SHAPES[index % len(SHAPES)]
    torch.manual_seed(index)
    extractor = build_extractor(
        "soft-prompt-frozen", SCHEMAS[schema], str(base), max_length=64, threshold=THRESHOLD,
        prompt_config=ClinicalPromptConfig(num_virtual_tokens=tokens, depth=depth, prompt_start_layer=start),
    )
    extractor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def adapter_dirs(tmp_path_factory, tiny_base) -> list[Path]:
    root = tmp_path_factory.mktemp("adapters")
    return [save_adapter(root / f"adapter-{i}", tiny_base, i) for i in range(16)]


@pytest.fixture(scope="module")
def bank(tiny_base, adapter_dirs) -> AdapterBank:
    bank = AdapterBank(str(tiny_base))
    for i, directory in enumerate(adapter_dirs):
        bank.add(f"adapter-{i}", directory)
    return bank


@pytest.mark.parametrize("count", [2, 4, 16])
def test_each_row_of_a_mixed_batch_equals_its_adapter_alone(bank, notes, count) -> None:
    names = [f"adapter-{i}" for i in range(count)]
    rows = {name: bank[name].concept_questions(notes[:1]) for name in names}
    mixed = [(name, row) for name in names for row in rows[name]]
    random.Random(count).shuffle(mixed)
    batch = mixed[:48]
    hidden = bank.encode([row for _, row in batch], [name for name, _ in batch])
    for name in names:
        mine = [(i, row) for i, (other, row) in enumerate(batch) if other == name]
        if not mine:
            continue
        adapter = bank[name]
        inputs = adapter.batch_inputs([row for _, row in mine])
        with torch.no_grad():
            alone = adapter.encoder(inputs["input_ids"], inputs["attention_mask"],
                                    token_type_ids=inputs.get("token_type_ids"), block_ids=inputs["block_ids"])
        for (i, row), expected in zip(mine, alone):
            length = len(row["input_ids"])
            torch.testing.assert_close(hidden[i, :length], expected[:length], rtol=0, atol=1e-5)
    depths = {bank[name].encoder.config.depth for name, _ in batch}
    assert depths == {"input", "deep"}
    assert {bank[name].encoder.config.prompt_start_layer for name, _ in batch} == {0, 1}


def test_late_adapters_share_the_lower_layers(tiny_base, notes, tmp_path) -> None:
    bank = AdapterBank(str(tiny_base))
    for i in range(16):
        torch.manual_seed(i)
        extractor = build_extractor(
            "soft-prompt-frozen", SCHEMAS["problems"], str(tiny_base), max_length=64, threshold=THRESHOLD,
            prompt_config=ClinicalPromptConfig(num_virtual_tokens=4, depth="deep", prompt_start_layer=1),
        )
        extractor.save_pretrained(tmp_path / str(i))
        bank.add(str(i), tmp_path / str(i))
    names = [str(i) for i in range(16)]
    window = bank["0"].concept_questions(notes[:1])[:1]  # one window, asked by every adapter
    lowest = bank.backbone.encoder.layer[0].attention.self
    batches = []
    hook = lowest.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    hidden = bank.encode(window * 16, names)
    hook.remove()
    assert batches == [1]  # the lower layer ran once for the 16 adapters' rows
    for i, name in enumerate(names):
        inputs = bank[name].batch_inputs(window)
        with torch.no_grad():
            alone = bank[name].encoder(inputs["input_ids"], inputs["attention_mask"],
                                       token_type_ids=inputs.get("token_type_ids"), block_ids=inputs["block_ids"])
        torch.testing.assert_close(hidden[i], alone[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("count", [4, 16])
def test_bank_extract_equals_each_adapter_extract_alone(bank, notes, adapter_dirs, tiny_base, count) -> None:
    names = [f"adapter-{i % count}" for i in range(len(notes))]
    predicted = bank.extract(notes, names, batch_size=16)
    assert [doc.doc_id for doc in predicted] == [doc.doc_id for doc in notes]
    for note, name, doc in zip(notes, names, predicted):
        assert format_ann(doc) == format_ann(bank[name].extract([note])[0])
    assert all(doc.entities for doc in predicted)
    assert any(doc.relations for doc in predicted)
    fresh = load_extractor(adapter_dirs[0], backbone=str(tiny_base))  # its own copy of the base
    assert format_ann(predicted[0]) == format_ann(fresh.extract(notes[:1])[0])


def test_adapters_are_added_replaced_and_removed_on_one_base(tiny_base, adapter_dirs, notes, tmp_path) -> None:
    bank = AdapterBank(str(tiny_base))
    base = bank.backbone
    bank.add("site", adapter_dirs[0])
    first = format_ann(bank.extract(notes[:1], "site")[0])
    bank.add("other", adapter_dirs[1])
    with pytest.raises(ValueError, match="'site' is loaded"):
        bank.add("site", adapter_dirs[2])

    broken = tmp_path / "broken"
    shutil.copytree(adapter_dirs[2], broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(AdapterFormatError, match="adapter_model.safetensors"):
        bank.replace("site", broken)
    assert format_ann(bank.extract(notes[:1], "site")[0]) == first  # a failed replace keeps the old adapter

    bank.replace("site", adapter_dirs[2])
    replaced = format_ann(bank.extract(notes[:1], "site")[0])
    assert replaced != first
    assert replaced == format_ann(load_extractor(adapter_dirs[2], backbone=str(tiny_base)).extract(notes[:1])[0])
    assert all(bank[name].encoder.backbone is base for name in bank.names)

    bank.remove("other")
    assert bank.names == ["site"]
    with pytest.raises(KeyError, match="no adapter named 'other'"):
        bank.extract(notes[:1], "other")


def test_bank_refuses_adapters_it_cannot_share_a_base_with(tiny_base, tmp_path, notes) -> None:
    bank = AdapterBank(str(tiny_base))
    wider = save_tiny_bert(tmp_path / "wider", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"], hidden_size=48,
                           num_attention_heads=2, max_position_embeddings=64)
    save_adapter(tmp_path / "wide-adapter", wider, 0)
    with pytest.raises(AdapterCompatibilityError, match="hidden_size"):
        bank.add("wide", tmp_path / "wide-adapter")
    build_extractor("hard-prompt", SCHEMAS["meds"], str(tiny_base), max_length=64).save_pretrained(tmp_path / "hard")
    with pytest.raises(ExtractorFormatError, match="only 'soft-prompt-frozen'"):
        bank.add("hard", tmp_path / "hard")
    assert bank.names == []
    with pytest.raises(ValueError, match="4 documents but 1 adapter names"):
        bank.extract(notes, ["x"])


def test_load_adapter_takes_a_name_or_a_loaded_encoder(tiny_base, adapter_dirs, notes) -> None:
    expected = format_ann(load_extractor(adapter_dirs[3], backbone=str(tiny_base)).extract(notes[:1])[0])
    by_name = load_adapter(str(tiny_base), adapter_dirs[3])
    encoder = AutoModel.from_pretrained(tiny_base)
    by_module = load_adapter(encoder, adapter_dirs[3])
    assert by_module.encoder.backbone is encoder
    assert format_ann(by_name.extract(notes[:1])[0]) == expected
    assert format_ann(by_module.extract(notes[:1])[0]) == expected


def test_peft_model_from_pretrained_points_to_load_adapter(tiny_base, adapter_dirs) -> None:
    from peft import PeftModel

    with pytest.raises(AdapterFormatError, match=r"clinical_prompt\.from_pretrained\(repo_id_or_dir\) or "
                                                 r"clinical_prompt\.load_adapter\(base_model, repo_id_or_dir\)"):
        PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_base), str(adapter_dirs[0]))


def test_readme_snippet_loads_an_adapter_and_writes_predictions(minilm_path, tmp_path, monkeypatch, notes) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "load_adapter(" in block)
    torch.manual_seed(0)
    extractor = build_extractor("soft-prompt-frozen", SCHEMAS["problems"], "minilm", max_length=128)
    extractor.save_pretrained(tmp_path / "adapter")
    (tmp_path / "note-1.txt").write_text(notes[0].text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})
    expected = extractor.extract([Document("note-1", notes[0].text)])[0]
    assert expected.entities
    assert (tmp_path / "predictions" / "note-1.ann").read_text(encoding="utf-8") == format_ann(expected)
