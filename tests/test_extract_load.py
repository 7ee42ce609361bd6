"""``clinical-prompt extract`` under load: 5,000 short notes and ten bad ones through a tiny random adapter; every
readable note gets its ``.ann``, every bad one is named, and resident memory stays flat (``benchmarks/extract_load.py``
runs the same at any size and on MiniLM)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from clinical_prompt.brat import read_text
from conftest import save_tiny_bert

NOTES = 5000
# The resident set over the last tenth of the notes may exceed that over the first tenth by this much. A run stays
# within 1 MiB; one that holds on to what each note leaves (its text and predictions: +110 MiB), or that lets oneDNN
# keep memory for each new batch shape (+12 MiB with this tiny model, +250 MiB with MiniLM), grows by more.
GROWTH_BOUND = 4 * 2**20


def load_benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "extract_load.py"
    spec = importlib.util.spec_from_file_location("extract_load_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_thousands_of_notes_are_written_the_bad_ones_named_and_memory_stays_flat(tmp_path, one_thread) -> None:
    load = load_benchmark()
    base = save_tiny_bert(tmp_path / "base", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *load.words()],
                          hidden_size=32, num_attention_heads=2, max_position_embeddings=96)
    good, bad = load.write_notes(tmp_path / "notes", NOTES)
    adapter = load.save_adapter(base, tmp_path / "adapter")

    run = load.run_load(base, adapter, tmp_path / "notes", tmp_path / "out")
    print(run.report())

    assert run.status == 1
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(name.replace(".txt", ".ann") for name in good)
    assert read_text(out / good[0].replace(".txt", ".ann")) == ""  # the empty note
    annotated = [read_text(out / name.replace(".txt", ".ann")) for name in good[1:200]]
    assert sum("\tDrug " in ann for ann in annotated) > 50  # the adapter ran on the notes
    for name in bad:
        assert f"notes/{name}" in run.stderr
    assert f"{len(bad)} of {len(good) + len(bad)} notes could not be read" in run.stderr
    assert run.start_rss and run.end_rss - run.start_rss < GROWTH_BOUND, run.report()
