"""Note text reaches the BRAT predictions and nothing else.

A sentinel word is salted into a few bundled MACCROBAT notes (inside entity spans and elsewhere, offsets moved to
match) and into their annotator notes; then ``quickstart``, the ``train`` recipe, ``corpus stats``, ``evaluate``,
``card``, ``extract`` and ``push`` (to the stand-in hub) run on them, with every logger at DEBUG, along with their
error paths: a malformed ``.ann``, a note that is not UTF-8, a note no adapter pattern takes, a tampered adapter,
missing files, a failing hub, a folder holding notes. The sentinel must appear in no output, log record or warning,
in no file the runs wrote (adapter, training folder, run.json, metrics, card, uploads), and in the predicted ``.ann``
files that quote it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from clinical_prompt.brat import Document, Note, read_document, write_document
from clinical_prompt.cli import main
from clinical_prompt.extractors import build_extractor
from clinical_prompt.quickstart import BUNDLED_CORPUS
from clinical_prompt.schema import load_schema
from conftest import save_tiny_bert
from hub_standin import REPO

SENTINEL = "Zqxjsentinel"
SCHEMA = load_schema("maccrobat-med")
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "tiny-train.yaml"
NOTES = sorted(BUNDLED_CORPUS.glob("*.txt"), key=lambda path: path.stat().st_size)[:8]  # the shortest, for speed
WORD = re.compile(r"[A-Za-z]{4,}")
SALT_EVERY = 7  # besides the first word of each entity of a schema type, every 7th word
LIBRARY_LOGGERS = ("clinical_prompt", "transformers", "huggingface_hub", "accelerate", "peft", "httpx", "httpcore")


def salted(doc: Document) -> Document:
    """``doc`` with the sentinel in place of the first word of each entity of a schema type and of every
    ``SALT_EVERY``-th word, entity offsets and texts moved to match, and in an annotator note on each entity."""
    bounds = {p for entity in doc.entities.values() for span in entity.spans for p in span}
    words = [m.span() for m in WORD.finditer(doc.text) if not any(m.start() < p < m.end() for p in bounds)]
    chosen = set(words[::SALT_EVERY])
    for entity in doc.entities.values():
        if entity.type in SCHEMA.mapping.concepts:
            chosen.update([w for w in words if entity.start <= w[0] and w[1] <= entity.spans[0][1]][:1])
    shifts = [(end, len(SENTINEL) - (end - start)) for start, end in sorted(chosen)]

    def moved(position: int) -> int:
        return position + sum(delta for end, delta in shifts if end <= position)

    pieces, last = [], 0
    for start, end in sorted(chosen):
        pieces += [doc.text[last:start], SENTINEL]
        last = end
    text = "".join([*pieces, doc.text[last:]])
    entities = {}
    for key, entity in doc.entities.items():
        spans = tuple((moved(start), moved(end)) for start, end in entity.spans)
        entities[key] = dataclasses.replace(entity, spans=spans, text=" ".join(text[s:e] for s, e in spans))
    notes = {f"#{900 + i}": Note(f"#{900 + i}", "AnnotatorNotes", key, f"{SENTINEL} said the note")
             for i, key in enumerate(doc.entities)}
    return dataclasses.replace(doc, text=text, entities=entities, notes={**doc.notes, **notes})


def ann_lines(text: str) -> list[str]:
    """Lines that a BRAT reader refuses, each holding the sentinel: bad offsets, wrong text, no id, bad fields."""
    return [f"T900\tSign_symptom 5 {len(text) + 40}\t{SENTINEL}", f"T901\tSign_symptom 0 3\t{SENTINEL}",
            f"{SENTINEL}\tjunk", f"A900\tNegation T1 {SENTINEL} more", f"R900\tCAUSE Arg1:{SENTINEL} Arg2:T1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The salted notes, a salted note with malformed lines (``0-malformed``) and one that is not UTF-8."""
    root = tmp_path_factory.mktemp("salted")
    for path in NOTES:
        doc = read_document(write_document(salted(read_document(path)), root, write_text=True).with_suffix(".txt"))
        assert any(SENTINEL in e.text for e in doc.entities.values() if e.type in SCHEMA.mapping.concepts)
    first = salted(read_document(NOTES[0]))
    ann = write_document(dataclasses.replace(first, doc_id="0-malformed"), root, write_text=True)
    ann.write_text(ann.read_text(encoding="utf-8") + "\n".join(ann_lines(first.text)) + "\n", encoding="utf-8")
    (root / "0-latin1.txt").write_bytes(f"{SENTINEL} caf\xe9".encode("latin-1"))
    (root / "0-latin1.ann").write_text(f"T1\tSign_symptom 0 12\t{SENTINEL}\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def tiny_base(corpus, tmp_path_factory) -> Path:
    """A random tiny BERT whose vocabulary holds the corpus words, the sentinel among them, and the queries'."""
    queries = " ".join(c.query for c in SCHEMA.concepts) + " ".join(r.query for r in SCHEMA.relations)
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in corpus.glob("*.txt")] + [queries]
    words = sorted({w for text in texts for w in re.findall(r"[^\W\d_]+|\d|[^\w\s]", text.lower())})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-base"), vocab, hidden_size=32, num_attention_heads=2,
                          max_position_embeddings=256)


@pytest.fixture
def verbose(caplog, monkeypatch) -> Iterator[list[warnings.WarningMessage]]:
    """Every library logger at DEBUG, its records reaching ``caplog``; the warnings raised meanwhile."""
    caplog.set_level(logging.DEBUG)
    for name in LIBRARY_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
    handlers = list(logging.getLogger("clinical_prompt").handlers)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    logging.getLogger("clinical_prompt").handlers[:] = handlers  # quickstart adds its own


def files_under(root: Path, *, skip: Path | None = None) -> dict[str, bytes]:
    """The bytes of every file under ``root`` (or ``root`` itself) but those under ``skip``, by path."""
    paths = root.rglob("*") if root.is_dir() else [root]
    return {str(p): p.read_bytes() for p in paths if p.is_file() and (skip is None or skip not in p.parents)}


def holding_sentinel(contents: dict[str, bytes]) -> list[str]:
    """The names whose content holds the sentinel in any letter case."""
    return [name for name, content in contents.items() if SENTINEL.lower().encode() in content.lower()]


@pytest.mark.slow
def test_note_text_reaches_the_predictions_and_nothing_else(corpus, tiny_base, hub, tmp_path, capfd, caplog,
                                                            verbose, one_thread) -> None:
    printed: dict[str, str] = {}
    written: dict[str, bytes] = {}  # what each step wrote, read right after it, by step and path

    def cli(step: str, *arguments: str | Path) -> int:
        status = main([str(argument) for argument in arguments])
        out, err = capfd.readouterr()
        printed[step] = out + err
        return status

    def keep(step: str, root: Path, *, skip: Path | None = None) -> None:
        written.update({f"{step}: {path}": content for path, content in files_under(root, skip=skip).items()})

    out = tmp_path / "quickstart"
    assert cli("quickstart", "quickstart", "--corpus", corpus, "--schema", "maccrobat-med", "--backbone", tiny_base,
               "--epochs", 1, "--train-documents", 6, "--test-documents", 2, "--output-dir", out) == 0
    held_out = sorted(p.stem for p in NOTES)[-2:]
    assert sorted(p.stem for p in (out / "predictions").glob("*.ann")) == held_out
    keep("quickstart", out, skip=out / "predictions")  # adapter, card, metrics, training folder
    recipe = tmp_path / "recipe"
    assert cli("train recipe", "train", "--config", RECIPE, f"output_dir={recipe}", f"data.train={corpus}",
               f"model.backbone={tiny_base}") == 0
    keep("train recipe", recipe, skip=recipe / "predictions")
    recipe_files = {f"train recipe: {recipe / name}" for name in ("run.json", "metrics.json", "model/README.md")}
    assert recipe_files <= set(written)

    assert cli("corpus stats", "corpus", "stats", corpus, "--schema", "maccrobat-med") == 0
    for problem in ["0-malformed.ann:", "offset out of range", "text mismatch", "malformed line",
                    "missing reference", "0-latin1.txt:1: not UTF-8"]:
        assert problem in printed["corpus stats"]

    gold = tmp_path / "gold"
    gold.mkdir()
    for doc_id in held_out:
        for suffix in (".txt", ".ann"):
            shutil.copy(corpus / f"{doc_id}{suffix}", gold)
    metrics = tmp_path / "metrics.json"
    assert cli("evaluate", "evaluate", "--gold", gold, "--pred", out / "predictions", "--json", metrics) == 0
    assert json.loads(metrics.read_text())["documents"]["gold"] == 2
    keep("evaluate", metrics)
    assert cli("evaluate malformed", "evaluate", "--gold", corpus, "--pred", out / "predictions") == 2
    assert "0-latin1.txt:1: not UTF-8" in printed["evaluate malformed"]
    assert cli("evaluate missing", "evaluate", "--gold", gold, "--pred", tmp_path / "absent") == 2

    assert cli("card", "card", out / "adapter", "--metrics", metrics) == 0
    keep("card", out / "adapter" / "README.md")
    assert cli("card missing", "card", tmp_path / "absent") == 2

    # extraction: the trained adapter, and an untrained one whose low threshold makes a span of every word
    probe = tmp_path / "probe"
    build_extractor("soft-prompt-frozen", SCHEMA, str(tiny_base), max_length=128, threshold=0.01).save_pretrained(probe)
    keep("probe", probe)
    notes = tmp_path / "notes"
    for adapter in ("site", "probe"):
        (notes / adapter).mkdir(parents=True)
        for path in NOTES:
            shutil.copy(corpus / path.name, notes / adapter / path.name)
    (notes / "site" / "unreadable.txt").write_bytes(f"{SENTINEL} note\n".encode() + b"caf\xe9 " + SENTINEL.encode())
    predictions = tmp_path / "extracted"
    adapters = ["--adapter", f"site={out / 'adapter'}", "--adapter", f"probe={probe}"]
    assert cli("extract", "extract", "--base", tiny_base, *adapters, "--adapter-for", "site/*=site",
               "--adapter-for", "probe/*=probe", "--input", notes, "--output", predictions) == 1
    assert "site/unreadable.txt:2: not UTF-8 (byte offset 21)" in printed["extract"]
    extracted = sorted(p.relative_to(predictions).as_posix() for p in predictions.rglob("*.ann"))
    assert extracted == sorted(f"{adapter}/{p.stem}.ann" for adapter in ("site", "probe") for p in NOTES)
    quoting = holding_sentinel({p.name: p.read_bytes() for p in (predictions / "probe").glob("*.ann")})
    assert sorted(quoting) == sorted(f"{p.stem}.ann" for p in NOTES)  # the salt went in, and came out here

    assert cli("extract unassigned", "extract", "--base", tiny_base, *adapters, "--adapter-for", "site/*=site",
               "--input", notes, "--output", tmp_path / "unassigned") == 2
    assert "no --adapter-for pattern matches it" in printed["extract unassigned"]
    tampered = Path(shutil.copytree(out / "adapter", tmp_path / "tampered"))
    config = json.loads((tampered / "adapter_config.json").read_text())
    (tampered / "adapter_config.json").write_text(json.dumps({**config, "num_virtual_tokens": "sixteen"}))
    assert cli("extract tampered", "extract", "--base", tiny_base, "--adapter", f"site={tampered}",
               "--input", notes / "site", "--output", tmp_path / "tampered-out") == 2
    assert "adapter_config.json" in printed["extract tampered"]
    assert cli("extract missing", "extract", "--base", tiny_base, "--adapter", f"site={out / 'adapter'}",
               "--input", notes / "site" / "absent.txt", "--output", tmp_path / "missing-out") == 2

    push = ["--repo-id", REPO, "--token", "hf_standin", "--endpoint", hub.url]
    assert cli("push", "push", out / "adapter", *push) == 0
    hub.failures["commit"] = 500
    assert cli("push failing", "push", out / "adapter", *push, "--revision", "v2") == 2
    holding_notes = Path(shutil.copytree(out / "adapter", tmp_path / "holding-notes"))
    shutil.copytree(notes / "site", holding_notes / "notes")
    assert cli("push notes", "push", holding_notes, *push) == 2
    assert "holds ['notes/']" in printed["push notes"]

    assert all(printed.values())
    leaks = [f"output of {step}" for step, text in printed.items() if SENTINEL.lower() in text.lower()]
    assert caplog.records and any(r.levelno == logging.DEBUG for r in caplog.records)
    leaks += [f"log record of {r.name}" for r in caplog.records if SENTINEL.lower() in r.getMessage().lower()]
    leaks += [f"warning {w.category.__name__}" for w in verbose if SENTINEL.lower() in str(w.message).lower()]
    leaks += holding_sentinel(written)
    uploads = {f"{repo}@{branch}:{name}": content for repo, entry in hub.repos.items()
               for branch, files in entry["branches"].items() for name, content in files.items()}
    assert "README.md" in hub.files() and "adapter_model.safetensors" in hub.files()
    leaks += holding_sentinel(uploads)
    assert leaks == []
