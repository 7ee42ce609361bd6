"""``clinical-prompt extract``: notes streamed through adapters on one base, one ``.ann`` each, unreadable notes
reported by file, outputs written atomically."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from clinical_prompt import load_adapter
from clinical_prompt.brat import Document, format_ann
from clinical_prompt.cli import main
from clinical_prompt.extract_notes import run_extract
from clinical_prompt.extractors import build_extractor
from clinical_prompt.prompts import ClinicalPromptConfig
from clinical_prompt.schema import TaskSchema
from conftest import save_tiny_bert

NOTES = {
    "a": "Aspirin 81 mg daily was started.\nShe denied chest pain.",
    "site-a/b": "Heparin was stopped after bleeding. Fever resolved.",
    "site-b/c": "Metformin 500 mg twice daily. No rash.",
}
SECRET = "Patient Zelda Quux"  # readable words of the note that is not UTF-8: never printed
WORDS = sorted({w.strip(".,").lower() for text in [*NOTES.values(), SECRET] for w in text.split()})
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[", "]", ".", ",", *WORDS]
SCHEMAS = {
    "a": TaskSchema.from_dict({
        "name": "meds",
        "concepts": [{"name": "Drug", "query": "drugs"}, {"name": "Dosage", "query": "doses"}],
        "relations": [{"name": "Dosage-Drug", "head": "Drug", "tails": ["Dosage"], "query": "dose of {head}",
                       "head_arg": "Arg2"}],
    }),
    "b": TaskSchema.from_dict({"name": "problems", "concepts": [{"name": "Problem", "query": "problems"}]}),
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """A tiny base, adapter ``a`` (deep prompts, meds) and ``b`` (input-layer prompts, problems), random weights."""
    root = tmp_path_factory.mktemp("extract")
    base = save_tiny_bert(root / "base", VOCAB, hidden_size=32, num_attention_heads=2, max_position_embeddings=64)
    for seed, (name, depth) in enumerate([("a", "deep"), ("b", "input")]):
        torch.manual_seed(seed)
        build_extractor(
            "soft-prompt-frozen", SCHEMAS[name], str(base), max_length=32, threshold=0.3,
            prompt_config=ClinicalPromptConfig(num_virtual_tokens=3 + seed, depth=depth),
        ).save_pretrained(root / name)
    return {"base": base, "a": root / "a", "b": root / "b"}


@pytest.fixture
def notes_dir(tmp_path) -> Path:
    notes = tmp_path / "notes"
    for doc_id, text in NOTES.items():
        (notes / f"{doc_id}.txt").parent.mkdir(parents=True, exist_ok=True)
        (notes / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    (notes / "bad.txt").write_bytes(f"{SECRET}\ncaf\xe9 au lait".encode("latin-1"))
    return notes


def expected_ann(setup: dict[str, Path], adapter: str, doc_id: str) -> str:
    extractor = load_adapter(str(setup["base"]), setup[adapter])
    return format_ann(extractor.extract([Document(doc_id, NOTES[doc_id])])[0])


def extract(setup: dict[str, Path], *arguments: str) -> int:
    return main(["extract", "--base", str(setup["base"]), *arguments])


def test_every_readable_note_gets_its_ann_and_the_unreadable_one_is_named(setup, notes_dir, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    status = extract(setup, "--adapter", f"a={setup['a']}", "--input", str(notes_dir), "--output", str(out))
    captured = capsys.readouterr()
    assert status == 1
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a.ann", "site-a/b.ann", "site-b/c.ann"]
    for doc_id in NOTES:
        assert (out / f"{doc_id}.ann").read_text(encoding="utf-8") == expected_ann(setup, "a", doc_id)
    assert "Drug" in (out / "a.ann").read_text(encoding="utf-8")
    assert "notes/bad.txt:2: not UTF-8 (byte offset 22)" in captured.err
    assert "1 of 4 notes could not be read" in captured.err
    assert "wrote 3 .ann files" in captured.out
    for text in [SECRET, "Zelda", "caf", *NOTES.values()]:
        assert text not in captured.err + captured.out


def test_adapter_for_sends_each_note_to_its_adapter(setup, notes_dir, tmp_path) -> None:
    (notes_dir / "bad.txt").unlink()
    out = tmp_path / "out"
    status = extract(setup, "--adapter", f"a={setup['a']}", "--adapter", f"b={setup['b']}",
                     "--adapter-for", "site-b/*=b", "--adapter-for", "*.txt=a",
                     "--input", str(notes_dir), "--output", str(out), "--batch-size", "4")
    assert status == 0
    for doc_id, adapter in [("a", "a"), ("site-a/b", "a"), ("site-b/c", "b")]:
        assert (out / f"{doc_id}.ann").read_text(encoding="utf-8") == expected_ann(setup, adapter, doc_id)
    assert "Problem" in (out / "site-b/c.ann").read_text(encoding="utf-8")


def test_an_output_is_replaced_whole_or_left_as_it_was(setup, notes_dir, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.ann").write_text("T1\tDrug 0 7\tAspirin\n", encoding="utf-8")
    arguments = ["--adapter", f"a={setup['a']}", "--input", str(notes_dir / "a.txt"), "--output", str(out)]

    def interrupted(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", interrupted)
        assert extract(setup, *arguments) == 2
    assert "clinical-prompt: error: [Errno 28] No space left on device" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["a.ann"]  # no temporary file left behind
    assert (out / "a.ann").read_text(encoding="utf-8") == "T1\tDrug 0 7\tAspirin\n"

    assert extract(setup, *arguments) == 0
    assert (out / "a.ann").read_text(encoding="utf-8") == expected_ann(setup, "a", "a")


@pytest.mark.parametrize("arguments, message", [
    (["--adapter", "a=A", "--adapter", "b=B"], "no --adapter-for pattern matches it, and 2 adapters are loaded"),
    (["--adapter", "a=A", "--adapter-for", "*=c"], "--adapter-for names adapter 'c', which is not loaded"),
    (["--adapter", "a=A", "--adapter", "a=B"], "repeat a name"),
    (["--adapter", "a=A", "--batch-size", "0"], "--batch-size must be >= 1"),
])
def test_input_problems_end_with_one_error_line(setup, notes_dir, tmp_path, capsys, arguments, message) -> None:
    arguments = [part.replace("=A", f"={setup['a']}").replace("=B", f"={setup['b']}") for part in arguments]
    assert extract(setup, *arguments, "--input", str(notes_dir), "--output", str(tmp_path / "out")) == 2
    error = capsys.readouterr().err
    assert error.startswith("clinical-prompt: error: ") and message in error
    assert not (tmp_path / "out").exists()


def test_no_notes_and_a_malformed_adapter_argument_are_refused(setup, tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert extract(setup, "--adapter", f"a={setup['a']}", "--input", str(tmp_path / "empty"),
                   "--output", str(tmp_path / "out")) == 2
    assert "no .txt notes in" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        extract(setup, "--adapter", str(setup["a"]), "--input", str(tmp_path), "--output", str(tmp_path / "out"))
    assert exited.value.code == 2
    assert "expected NAME=DIR" in capsys.readouterr().err


def test_notes_stream_through_in_passes_with_the_same_result(setup, notes_dir, tmp_path) -> None:
    status = run_extract(str(setup["base"]), [("a", str(setup["a"]))], [str(notes_dir)], tmp_path / "out",
                         notes_per_pass=2)
    assert status == 1
    for doc_id in NOTES:
        assert (tmp_path / "out" / f"{doc_id}.ann").read_text(encoding="utf-8") == expected_ann(setup, "a", doc_id)
