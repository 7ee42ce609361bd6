"""``clinical-prompt extract`` under load: thousands of short notes with a few bad ones, resident memory over the run.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/extract_load.py [--notes 5000] [--base minilm]

Writes ``--notes`` generated notes of one or two short sentences (medications, doses, symptoms) and ten that cannot
be read (not UTF-8, directories and FIFOs named ``*.txt``, links to nothing) into a temporary folder, saves an
untrained ``soft-prompt-frozen`` adapter (drug and dosage concepts, the dosage relation) on ``--base``, and runs
:func:`clinical_prompt.extract_notes.run_extract` over the folder in this process. A thread reads the resident set
(``VmRSS`` of ``/proc/self/status``) every 0.2 s with the number of ``.ann`` files written so far. Printed: notes
written and refused, seconds, notes/s, and the largest resident set while the first 10% of the notes were written
against the largest over the last 10% and at the end; a leak grows with the notes, so the two differ by it.

``run_extract`` runs torch without oneDNN: oneDNN, which runs torch's CPU GELU, kept memory for every batch shape
it met (MiniLM: +492 MiB over 200 shapes, none of it given back; with its primitive cache capped at 64 entries
still more), and over 5,000 notes here the resident set grew by 250 MiB with oneDNN and stayed flat without it,
at the same speed. ``tests/test_extract_load.py`` runs the same with a tiny random BERT and checks the figures.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from clinical_prompt.extract_notes import run_extract
from clinical_prompt.extractors import build_extractor
from clinical_prompt.schema import TaskSchema

DRUGS = ["Aspirin", "Heparin", "Metformin", "Lisinopril", "Warfarin", "Insulin", "Amoxicillin", "Prednisone"]
DOSES = ["81 mg", "500 mg", "5 mg", "10 units", "40 mg", "2 tablets"]
TIMES = ["daily", "twice daily", "at night", "every morning"]
SYMPTOMS = ["chest pain", "fever", "a rash", "nausea", "bleeding", "a cough"]
SENTENCES = ["{drug} {dose} {time} was started.", "She denied {symptom}.", "{drug} was stopped after {symptom}.",
             "He took {drug} {dose} {time} for {symptom}."]
SCHEMA = TaskSchema.from_dict({
    "name": "load-medication",
    "concepts": [{"name": "Drug", "query": "What is the drug?"}, {"name": "Dosage", "query": "What is the dosage?"}],
    "relations": [{"name": "Dosage-Drug", "head": "Drug", "tails": ["Dosage"], "query": "What is the dosage of {head}?",
                   "head_arg": "Arg2"}],
})
SAMPLE_SECONDS = 0.2
WINDOW = 0.1  # the first and the last tenth of the notes


def words() -> list[str]:
    """The lower-cased words and punctuation of every generated note and query, for a tiny WordPiece vocabulary."""
    texts = [*SENTENCES, *DRUGS, *DOSES, *TIMES, *SYMPTOMS, *(c.query for c in SCHEMA.concepts),
             *(r.query for r in SCHEMA.relations)]
    return sorted({w for text in texts for w in re.findall(r"[a-z]+|\d+|[^\w\s]", text.lower())})


def note_text(rng: random.Random) -> str:
    """One or two generated sentences."""
    return " ".join(rng.choice(SENTENCES).format(drug=rng.choice(DRUGS), dose=rng.choice(DOSES), time=rng.choice(TIMES),
                                                 symptom=rng.choice(SYMPTOMS)) for _ in range(rng.randint(1, 2)))


def write_notes(directory: Path, count: int, *, seed: int = 0) -> tuple[list[str], list[str]]:
    """``count`` readable notes (``note-00000.txt`` ..., the first one empty) and ten that cannot be read, each kind
    spread over the run; the two lists of file names."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    good = [f"note-{i:05d}.txt" for i in range(count)]
    for i, name in enumerate(good):
        (directory / name).write_text("" if i == 0 else note_text(rng), encoding="utf-8")
    bad = [f"note-{count * i // 10:05d}-bad{i}.txt" for i in range(10)]
    not_utf8 = [b"\xfffever", b"Aspirin 81 mg caf\xe9.", b"She denied fever.\nHeparin \xc3(", b"Insulin \xe2\x82"]
    for name, content in zip(bad[:4], not_utf8):
        (directory / name).write_bytes(content)
    for name in bad[4:6]:
        (directory / name).mkdir()
    for name in bad[6:8]:
        os.mkfifo(directory / name)
    for name in bad[8:]:
        (directory / name).symlink_to(directory / f"missing-{name}")
    return good, bad


def save_adapter(base: str | os.PathLike, directory: Path, *, max_length: int = 64, threshold: float = 0.3) -> Path:
    """An untrained frozen soft-prompt adapter over :data:`SCHEMA` on ``base``, saved (seeded) in ``directory``."""
    torch.manual_seed(0)
    build_extractor("soft-prompt-frozen", SCHEMA, str(base), max_length=max_length,
                    threshold=threshold).save_pretrained(directory)
    return directory


def resident_bytes() -> int:
    """This process's resident set (``VmRSS``), in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def written_count(output: Path) -> int:
    """``.ann`` files in ``output`` (temporary files of atomic writes are hidden and not counted)."""
    if not output.is_dir():
        return 0
    with os.scandir(output) as entries:
        return sum(1 for entry in entries if entry.name.endswith(".ann") and not entry.name.startswith("."))


@contextlib.contextmanager
def memory_samples(output: Path) -> Iterator[list[tuple[int, int]]]:
    """``(ann files written, resident bytes)`` every :data:`SAMPLE_SECONDS` while the block runs, and at its end."""
    samples: list[tuple[int, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_SECONDS):
            samples.append((written_count(output), resident_bytes()))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join()
        samples.append((written_count(output), resident_bytes()))


@dataclass
class LoadRun:
    """What one load run did and took."""

    status: int
    notes: int
    written: int
    seconds: float
    stderr: str = field(repr=False)
    samples: list[tuple[int, int]] = field(repr=False)

    def peak(self, low: float, high: float) -> int:
        """The largest resident set sampled while between ``low`` and ``high`` of the notes had been written (0 when
        no sample fell there: a run too short for the sampling interval)."""
        return max((rss for count, rss in self.samples if low * self.notes < count <= high * self.notes), default=0)

    @property
    def start_rss(self) -> int:
        """The largest resident set while the first tenth of the notes was written."""
        return self.peak(0.0, WINDOW)

    @property
    def end_rss(self) -> int:
        """The largest resident set over the last tenth of the notes and at the end."""
        return self.peak(1.0 - WINDOW, 1.0)

    def report(self) -> str:
        mib = 2**20
        tenths = [self.peak(i / 10, (i + 1) / 10) / mib for i in range(10)]
        return "\n".join([
            f"{self.written:,} of {self.notes:,} notes written, exit status {self.status}, {self.seconds:.1f} s "
            f"({self.written / self.seconds:,.1f} notes/s), {len(self.samples)} memory samples",
            f"resident memory: peak {self.start_rss / mib:,.1f} MiB over the first {WINDOW:.0%} of the notes, "
            f"{self.end_rss / mib:,.1f} MiB over the last {WINDOW:.0%} and at the end "
            f"({(self.end_rss - self.start_rss) / mib:+,.1f} MiB)",
            "peak MiB by tenth of the notes: " + " ".join(f"{value:,.0f}" for value in tenths),
        ])


def run_load(base: str | os.PathLike, adapter: Path, notes: Path, output: Path, *, batch_size: int = 32) -> LoadRun:
    """``run_extract`` of every note in ``notes`` (a flat folder) into ``output``, its stderr kept, memory sampled."""
    total = sum(1 for _ in notes.glob("*.txt"))
    stderr = io.StringIO()
    with memory_samples(output) as samples, contextlib.redirect_stderr(stderr):
        began = time.perf_counter()
        status = run_extract(str(base), [("load", str(adapter))], [str(notes)], output, batch_size=batch_size)
        seconds = time.perf_counter() - began
    return LoadRun(status, total, written_count(output), seconds, stderr.getvalue(), samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notes", type=int, default=5000, help="readable notes to generate")
    parser.add_argument("--base", default="minilm", help="base model: minilm, a folder or a hub id")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="extract-load-") as scratch:
        root = Path(scratch)
        good, bad = write_notes(root / "notes", args.notes)
        adapter = save_adapter(args.base, root / "adapter")
        run = run_load(args.base, adapter, root / "notes", root / "out", batch_size=args.batch_size)
    refused = [name for name in bad if name in run.stderr]
    print(f"base {args.base}, {torch.get_num_threads()} torch threads, batch {args.batch_size}: {len(good):,} readable "
          f"notes and {len(bad)} bad ones, {len(refused)} of them reported")
    print(run.report())


if __name__ == "__main__":
    main()
