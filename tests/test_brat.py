"""BRAT standoff reader and writer: every annotation kind, bad input, atomic writes, the shared corpora."""
from __future__ import annotations

import os
import stat
from collections import Counter
from pathlib import Path

import pytest

from clinical_prompt import brat
from clinical_prompt.brat import (
    Attribute,
    BratFormatError,
    Document,
    Entity,
    Equivalence,
    Event,
    Normalization,
    Note,
    Relation,
    format_ann,
    read_corpus,
    read_document,
    write_document,
)

SENTINEL = "Zqxjsentinel"
TEXT = f"Aspirin 81 mg daily for {SENTINEL} pain.\n"
ALL_KINDS = (
    "T1\tDrug 0 7\tAspirin\n"
    "T2\tDosage 8 10;11 13\t81 mg\n"
    "T3\tFrequency 14 19\tdaily\n"
    "E1\tIntake:T1 Dose:T2 Dose2:T3\n"
    "R1\tWhen Arg1:T3 Arg2:E1\n"
    "A1\tNegated E1\n"
    "A2\tCertainty T1 likely\n"
    "M1\tSpeculation T3\n"
    "N1\tReference T1 RxNorm:1191\tAspirin\n"
    "#1\tAnnotatorNotes T1\tchecked twice \n"
    "*\tAlias T1 T3\n"
)


def write_pair(directory: Path, name: str, text: str | bytes, ann: str | bytes) -> Path:
    """Write ``name.txt`` and ``name.ann`` byte for byte; returns the ``.txt`` path."""
    txt_path = directory / f"{name}.txt"
    txt_path.parent.mkdir(parents=True, exist_ok=True)
    txt_path.write_bytes(text.encode() if isinstance(text, str) else text)
    txt_path.with_suffix(".ann").write_bytes(ann.encode() if isinstance(ann, str) else ann)
    return txt_path


def test_reads_every_kind_and_writes_it_back_unchanged(tmp_path: Path) -> None:
    doc = read_document(write_pair(tmp_path, "note", TEXT, ALL_KINDS))
    assert doc.doc_id == "note"
    assert doc.entities["T2"] == Entity("T2", "Dosage", ((8, 10), (11, 13)), "81 mg")
    assert (doc.entities["T2"].start, doc.entities["T2"].end) == (8, 13)
    assert doc.events["E1"] == Event("E1", "Intake", "T1", (("Dose", "T2"), ("Dose2", "T3")))
    assert doc.relations["R1"] == Relation("R1", "When", "T3", "E1")
    assert doc.attributes == {
        "A1": Attribute("A1", "Negated", "E1"),
        "A2": Attribute("A2", "Certainty", "T1", "likely"),
        "M1": Attribute("M1", "Speculation", "T3"),
    }
    assert doc.normalizations["N1"] == Normalization("N1", "Reference", "T1", "RxNorm", "1191", "Aspirin")
    assert doc.notes["#1"] == Note("#1", "AnnotatorNotes", "T1", "checked twice ")
    assert doc.equivalences == [Equivalence("Alias", ("T1", "T3"))]
    assert format_ann(doc) == ALL_KINDS


def test_documented_normalizations(tmp_path: Path) -> None:
    """Trailing whitespace after the last field, CRLF line ends, blank lines and a BOM are not written back."""
    text = "8\u2005mg and 1.5\u2005 x\n"
    ann = ("\ufeffT1\tDosage 0 4\t8\u2005mg\t\u2005\r\n"
           "T2\tVolume 9 13\t1.5\u2005\r\n"
           "\r\n"
           "E1\tDose:T1 \r\n"
           "R1\tSame Arg1:T1 Arg2:T2\t\r\n"
           "#1\tAnnotatorNotes T1\tchecked\r\n")
    doc = read_document(write_pair(tmp_path, "note", text, ann))
    assert doc.entities["T1"].text == "8\u2005mg"
    assert doc.entities["T2"].text == "1.5\u2005"
    assert format_ann(doc) == ("T1\tDosage 0 4\t8\u2005mg\n"
                               "T2\tVolume 9 13\t1.5\u2005\n"
                               "E1\tDose:T1\n"
                               "R1\tSame Arg1:T1 Arg2:T2\n"
                               "#1\tAnnotatorNotes T1\tchecked\n")


def test_discontinuous_text_joined_without_space_is_accepted_and_kept(tmp_path: Path) -> None:
    """Files from BRAT before 1.3 join fragments with nothing; BRAT accepts them, and so do we."""
    ann = "T1\tDrug 0 6;16 26\talpha-adrenergic\n"
    doc = read_document(write_pair(tmp_path, "note", "alpha- and beta-adrenergic", ann))
    assert doc.entities["T1"].text == "alpha-adrenergic"
    assert format_ann(doc) == ann


def test_crlf_text_keeps_offsets(tmp_path: Path) -> None:
    text = "History:\r\nAspirin 81 mg\r\n"
    doc = read_document(write_pair(tmp_path, "note", text, "T1\tDrug 10 17\tAspirin\n"))
    assert doc.text == text
    write_document(doc, tmp_path / "out", write_text=True)
    assert (tmp_path / "out" / "note.txt").read_bytes() == text.encode()


def test_bom_counts_as_offset_zero_as_brat_does(tmp_path: Path) -> None:
    raw = "\ufeffAspirin 81 mg\n".encode()
    doc = read_document(write_pair(tmp_path, "note", raw, "T1\tDrug 1 8\tAspirin\n"))
    assert doc.text[0] == "\ufeff" and doc.entities["T1"].spans == ((1, 8),)
    write_document(doc, tmp_path / "out", write_text=True)
    assert (tmp_path / "out" / "note.txt").read_bytes() == raw


def test_offsets_are_code_points(tmp_path: Path) -> None:
    text = "Patiënt kreeg 5 µg 💊 Aspirine"
    doc = read_document(write_pair(tmp_path, "note", text, "T1\tDose 14 18\t5 µg\nT2\tDrug 21 29\tAspirine\n"))
    assert [doc.text[e.start:e.end] for e in doc.entities.values()] == ["5 µg", "Aspirine"]


def test_empty_files_give_an_empty_document(tmp_path: Path) -> None:
    doc = read_document(write_pair(tmp_path, "empty", "", ""))
    assert doc == Document("empty", "")
    assert format_ann(doc) == ""


BAD_INPUTS = {
    "offset past the end": (TEXT, f"T1\tDrug 30 99\t{SENTINEL}\n", "offset out of range", 1),
    "start after end": (TEXT, f"T1\tDrug 24 8\t{SENTINEL}\n", "start after end", 1),
    "text mismatch": (TEXT, f"T1\tDrug 0 7\t{SENTINEL}\n", "text mismatch", 1),
    "unknown kind": (TEXT, f"T1\tDrug 0 7\tAspirin\nX1\tX 24 36\t{SENTINEL}\n", "unknown annotation kind", 2),
    "no id": (TEXT, f"{SENTINEL} 24 36\n", "malformed line", 1),
    "bad offsets": (TEXT, f"T1\tDrug 24 x36\t{SENTINEL}\n", "malformed line", 1),
    "missing id": (TEXT, "T1\tDrug 0 7\tAspirin\nR1\tFor Arg1:T1 Arg2:T9\n", "missing reference", 2),
    "text as id": (TEXT, f"T1\tDrug 0 7\tAspirin\nA1\tNegated {SENTINEL}\n", "missing reference", 2),
    "trigger not an entity": (TEXT, "T1\tDrug 0 7\tAspirin\nR1\tX Arg1:T1 Arg2:T1\nE1\tIntake:R1\n",
                              "missing reference", 3),
    "duplicate id": (TEXT, f"T1\tDrug 0 7\tAspirin\nT1\tDrug 24 36\t{SENTINEL}\n", "duplicate id", 2),
    "txt not UTF-8": (f"{SENTINEL}\n".encode() + b"\xff pain", "", "not UTF-8", 2),
    "ann not UTF-8": (TEXT, f"T1\tDrug 24 36\t{SENTINEL}\n".encode() + b"T2\tDrug 0 7\t\xe9\n", "not UTF-8", 2),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_names_file_line_and_kind_without_text(tmp_path: Path, case: str) -> None:
    text, ann, kind, line = BAD_INPUTS[case]
    txt_path = write_pair(tmp_path, "note", text, ann)
    with pytest.raises(BratFormatError) as raised:
        read_document(txt_path)
    error = raised.value
    assert (error.kind, error.line) == (kind, line)
    assert Path(error.path).parent == tmp_path and error.path in str(error)
    assert SENTINEL not in str(error) and SENTINEL not in repr(error.args)
    problems = read_corpus(tmp_path, collect_problems=True).problems
    assert [(p.path, p.line, p.kind) for p in problems] == [(error.path, line, kind)]
    assert SENTINEL not in repr(problems)


def test_ann_without_txt(tmp_path: Path) -> None:
    (tmp_path / "note.ann").write_text(f"T1\tDrug 0 7\t{SENTINEL}\n")
    with pytest.raises(BratFormatError) as raised:
        read_corpus(tmp_path)
    error = raised.value
    assert (error.path, error.line, error.kind) == (str(tmp_path / "note.txt"), None, "missing file")
    assert SENTINEL not in str(raised.value)
    corpus = read_corpus(tmp_path, collect_problems=True)
    assert corpus.documents == [] and [p.kind for p in corpus.problems] == ["missing file"]


@pytest.mark.skipif(os.name != "posix", reason="FIFOs, devices and symbolic links")
def test_what_is_no_regular_file_is_a_problem_not_a_read(tmp_path: Path) -> None:
    """A directory, a FIFO (which would block) or a device (which never ends) is never read; a link loop is named."""
    for name in ("directory", "fifo", "device", "loop"):
        write_pair(tmp_path, name, "", "")
        (tmp_path / f"{name}.txt").unlink()
    (tmp_path / "directory.txt").mkdir()
    os.mkfifo(tmp_path / "fifo.txt")
    (tmp_path / "device.txt").symlink_to("/dev/zero")
    (tmp_path / "loop.txt").symlink_to("loop.txt")
    (tmp_path / "ann-directory.ann").mkdir()
    corpus = read_corpus(tmp_path, collect_problems=True)
    assert corpus.documents == []
    assert [(Path(p.path).name, p.line, p.kind) for p in corpus.problems] == [
        ("ann-directory.txt", None, "missing file"),
        ("device.txt", None, "not a regular file"),
        ("directory.txt", None, "not a regular file"),
        ("fifo.txt", None, "not a regular file"),
        ("loop.txt", None, "unreadable file"),
    ]
    (tmp_path / "ann-directory.txt").write_text("")
    with pytest.raises(BratFormatError, match="ann-directory.ann: not a regular file"):
        read_document(tmp_path / "ann-directory.txt")


def test_huge_lines_give_short_messages(tmp_path: Path) -> None:
    """A line of many fragments or a huge id is refused without building the fragments; details are clipped."""
    ann = ("T1\tDrug " + ";".join(["0 40"] * 200_000) + "\tAspirin\n"
           f"T{'7' * 100_000}\tDrug 9 2\t{SENTINEL}\n")
    with pytest.raises(BratFormatError) as raised:
        read_document(write_pair(tmp_path, "note", TEXT, ann))
    assert raised.value.kind == "text mismatch" and raised.value.detail.startswith("id T1, spans 0 40;0 40;")
    problems = read_corpus(tmp_path, collect_problems=True).problems
    assert [(p.line, p.kind) for p in problems] == [(1, "text mismatch"), (2, "start after end")]
    assert all(len(p.detail) == 200 and p.detail.endswith("...") for p in problems)


def test_references_left_out_through_a_long_chain(tmp_path: Path) -> None:
    """Each relation refers to the next line's, the last to a missing id: all are left out, each reported."""
    size = 5000
    chain = [f"R{k}\tNext Arg1:T1 Arg2:{f'R{k + 1}' if k < size else 'T9'}\n" for k in range(1, size + 1)]
    write_pair(tmp_path, "note", TEXT, "T1\tDrug 0 7\tAspirin\n" + "".join(chain) + "A1\tNegated R1\n")
    corpus = read_corpus(tmp_path, collect_problems=True)
    assert [(p.line, p.kind) for p in corpus.problems] == [(line, "missing reference") for line in range(2, size + 3)]
    assert corpus.problems[-2].detail == f"R{size} refers to T9" and corpus.problems[0].detail == "R1 refers to R2"
    assert list(corpus.documents[0].entities) == ["T1"] and corpus.documents[0].order == ["T1"]


def test_collect_problems_reports_all_and_keeps_what_is_safe(tmp_path: Path) -> None:
    ann = ("T1\tDrug 0 7\tAspirin\n"
           f"T2\tPain 30 34\t{SENTINEL}\n"  # text mismatch: left out
           "E1\tSymptom:T2\n"               # trigger left out: left out
           "R1\tTreats Arg1:T1 Arg2:E1\n"   # argument left out: left out
           "A1\tCertain T1\n"
           "T3\tDrug 0 99\tAspirin\n")      # past the end: left out
    write_pair(tmp_path, "a", TEXT, ann)
    write_pair(tmp_path, "b", TEXT, "T1\tDrug 0 7\tAspirin\n")
    (tmp_path / "c.ann").write_text("")
    with pytest.raises(BratFormatError) as raised:
        read_corpus(tmp_path)
    assert (Path(raised.value.path).name, raised.value.line) == ("a.ann", 2)

    corpus = read_corpus(tmp_path, collect_problems=True)
    assert [(Path(p.path).name, p.line, p.kind) for p in corpus.problems] == [
        ("a.ann", 2, "text mismatch"), ("a.ann", 3, "missing reference"),
        ("a.ann", 4, "missing reference"), ("a.ann", 6, "offset out of range"), ("c.txt", None, "missing file")]
    assert SENTINEL not in repr(corpus.problems)
    first, second = corpus.documents
    assert (first.doc_id, list(first.entities), list(first.attributes)) == ("a", ["T1"], ["A1"])
    assert not first.events and not first.relations
    assert format_ann(first) == "T1\tDrug 0 7\tAspirin\nA1\tCertain T1\n"
    assert second.doc_id == "b" and list(second.entities) == ["T1"]


def test_corpus_ids_are_relative_paths_sorted(tmp_path: Path) -> None:
    for name in ("Train/Drug Bank/Zinc sulfate_ddi", "Train/Drug Bank/Abacavir_ddi", "Test/x"):
        write_pair(tmp_path, name, TEXT, "T1\tDrug 0 7\tAspirin\n")
    (tmp_path / "README.txt").write_text("not a document")
    ids = [doc.doc_id for doc in read_corpus(tmp_path).documents]
    assert ids == ["Test/x", "Train/Drug Bank/Abacavir_ddi", "Train/Drug Bank/Zinc sulfate_ddi"]


def test_new_document_is_written_by_kind_and_text_filled_in(tmp_path: Path) -> None:
    doc = Document("Sub dir/new note", TEXT)
    doc.relations["R1"] = Relation("R1", "Dose-Drug", "T2", "T1")
    doc.entities["T1"] = Entity("T1", "Drug", ((0, 7),))
    doc.entities["T2"] = Entity("T2", "Dosage", ((8, 10), (11, 13)))
    doc.equivalences.append(Equivalence("Alias", ("T1", "T2")))
    doc.order = ["*", "R1", "T9"]
    expected = ("*\tAlias T1 T2\nR1\tDose-Drug Arg1:T2 Arg2:T1\n"
                "T1\tDrug 0 7\tAspirin\nT2\tDosage 8 10;11 13\t81 mg\n")
    assert format_ann(doc) == expected
    path = write_document(doc, tmp_path, write_text=True)
    assert path == tmp_path / "Sub dir" / "new note.ann" and path.read_text() == expected
    assert read_document(path.with_suffix(".txt")).entities["T2"].text == "81 mg"
    assert sorted(p.name for p in path.parent.iterdir()) == ["new note.ann", "new note.txt"]


def test_write_document_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = read_document(write_pair(tmp_path, "note", TEXT, ALL_KINDS))
    synced: list[bool] = []  # whether each synced descriptor is a directory
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(brat.os, "fsync", fsync)
    write_document(doc, tmp_path)
    assert (tmp_path / "note.ann").read_text() == ALL_KINDS
    assert synced == ([False, True] if os.name == "posix" else [False])  # the file, then the rename in its directory

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(brat.os, "replace", fail)
    doc.entities.pop("T2")
    with pytest.raises(OSError):
        write_document(doc, tmp_path)
    assert (tmp_path / "note.ann").read_text() == ALL_KINDS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["note.ann", "note.txt"]


def test_line_break_in_a_field_is_refused_before_writing(tmp_path: Path) -> None:
    doc = Document("note", "Aspirin\r\n81 mg", {"T1": Entity("T1", "Drug", ((0, 14),))})
    with pytest.raises(BratFormatError) as raised:
        write_document(doc, tmp_path)
    assert raised.value.kind == "line break in a field" and "T1" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


# The shared corpora: every file round-trips; problems are exactly the known offset mismatches.
CORPORA = {  # directory: (documents, problems as (file name, line, kind))
    "maccrobat2020": (200, []),
    "ddi-corpus-2013-brat/Train": (572, [("Eszopiclone_ddi.ann", 36, "text mismatch")]),
    "ddi-corpus-2013-brat/Test": (212, []),
    "social-history-mtsamples/train": (251, None),
    "social-history-mtsamples/dev": (73, []),
    "social-history-mtsamples/test": (37, None),
}


def written_matches(original: str, written: str, left_out: set[int]) -> bool:
    """``written`` is ``original`` less the left-out lines and the whitespace after each line's last field."""
    kept = [line for number, line in enumerate(original.split("\n"), 1) if line and number not in left_out]
    lines = written.split("\n")
    return lines.pop() == "" and len(lines) == len(kept) and all(
        old.startswith(new) and not old[len(new):].strip() for old, new in zip(kept, lines))


@pytest.mark.parametrize("corpus_dir", CORPORA)
def test_corpus_round_trip(shared_data: Path, corpus_dir: str) -> None:
    root = shared_data / corpus_dir
    if not root.is_dir():
        pytest.skip(f"{corpus_dir} is not available")
    corpus = read_corpus(root, collect_problems=True)
    documents, known = CORPORA[corpus_dir]
    assert len(corpus.documents) == documents
    if known is not None:
        assert [(Path(p.path).name, p.line, p.kind) for p in corpus.problems] == known
    left_out = {(problem.path, problem.line) for problem in corpus.problems}
    for doc in corpus.documents:
        ann_path = root / f"{doc.doc_id}.ann"
        lines = {line for path, line in left_out if path == str(ann_path)}
        assert written_matches(ann_path.read_text(encoding="utf-8"), format_ann(doc), lines), doc.doc_id


def test_sdoh_problems_are_the_ten_known_mismatches_and_their_events(shared_data: Path) -> None:
    root = shared_data / "social-history-mtsamples"
    if not root.is_dir():
        pytest.skip("social-history-mtsamples is not available")
    corpus = read_corpus(root, collect_problems=True)
    kinds = Counter(p.kind for p in corpus.problems)
    assert kinds == {"text mismatch": 10, "missing reference": 8}
    events = Counter(doc.doc_id.split("/")[0] for doc in corpus.documents for _ in doc.events)
    assert events == {"train": 947 - 6, "dev": 269, "test": 123 - 2}
    assert sum(len(doc.entities) for doc in corpus.documents) == 3778 - 10


def test_maccrobat_counts_match_source(shared_data: Path) -> None:
    """SOURCE.md counts relations as R lines plus equivalences (OVERLAP); its list omits CO-OCCURRENCE (5)."""
    root = shared_data / "maccrobat2020"
    if not root.is_dir():
        pytest.skip("maccrobat2020 is not available")
    docs = read_corpus(root).documents
    entities = [e for doc in docs for e in doc.entities.values()]
    relations = Counter(r.type for doc in docs for r in doc.relations.values())
    relations.update(eq.type for doc in docs for eq in doc.equivalences)
    assert len(docs) == 200 and sum(len(doc.text) for doc in docs) == 565_716
    assert len(entities) == 25_189 and len({e.type for e in entities}) == 41
    assert sum(len(e.spans) > 1 for e in entities) == 44
    assert sum(len(doc.events) for doc in docs) == 14_368
    assert sum(relations.values()) == 18_330
    assert relations == {"MODIFY": 11_571, "BEFORE": 2_014, "OVERLAP": 2_023, "SUB_PROCEDURE": 1_375,
                         "IDENTICAL": 795, "AFTER": 398, "CAUSE": 149, "CO-OCCURRENCE": 5}
    assert Counter(a.name for doc in docs for a in doc.attributes.values()) == {"POLARITY": 1_273, "TREND": 143}


@pytest.mark.parametrize("split, documents, entities, relations, spaced", [
    ("Train", 572, 12_929, 3_789, 53), ("Test", 212, 2_816, 884, 12)])
def test_ddi_counts_match_source(
    shared_data: Path, split: str, documents: int, entities: int, relations: int, spaced: int
) -> None:
    """The one text mismatch (Train) is left out and reported: entities read plus problems give SOURCE's count."""
    root = shared_data / "ddi-corpus-2013-brat" / split
    if not root.is_dir():
        pytest.skip("ddi-corpus-2013-brat is not available")
    corpus = read_corpus(root, collect_problems=True)
    assert len(corpus.documents) == documents
    assert sum(len(doc.entities) for doc in corpus.documents) + len(corpus.problems) == entities
    assert sum(len(doc.relations) for doc in corpus.documents) == relations
    assert sum(" " in doc.doc_id for doc in corpus.documents) == spaced  # 130 file names in all


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_take_the_umask_and_replaced_files_keep_their_mode(tmp_path: Path, umask: int) -> None:
    doc = read_document(write_pair(tmp_path / "in", "note", TEXT, ALL_KINDS))
    previous = os.umask(umask)
    try:
        ann = write_document(doc, tmp_path / "out", write_text=True)
        assert stat.S_IMODE(ann.stat().st_mode) == 0o666 & ~umask
        assert stat.S_IMODE(ann.with_suffix(".txt").stat().st_mode) == 0o666 & ~umask
        ann.chmod(0o640)
        write_document(doc, tmp_path / "out")
        assert stat.S_IMODE(ann.stat().st_mode) == 0o640
    finally:
        os.umask(previous)
