"""Corpus readers for ADE-Corpus-V2 and PsyTAR, and the train/test splits the recipes and benchmarks share."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from clinical_prompt.brat import BratFormatError, Document, Entity
from clinical_prompt.corpus import hold_out, load_split
from clinical_prompt.readers import read_ade_corpus, read_documents, read_psytar_conll
from clinical_prompt.schema import load_schema

REPO = Path(__file__).resolve().parents[1]
ADVERSE_EFFECT = REPO / "recipes" / "configs" / "schemas" / "adverse-effect.yaml"


def mentions(doc: Document) -> set[tuple[str, str, int]]:
    return {(e.type, doc.text[e.start:e.end], e.start) for e in doc.entities.values()}


def test_ade_sentences_become_documents_with_entities_and_relations(tmp_path):
    sentence = "Fever after aspirin; later aspirin caused rash."
    # abstract offsets: the sentence starts at 100 in its abstract; "aspirin" occurs twice, "rash" once
    (tmp_path / "DRUG-AE.rel").write_text(
        f"11|{sentence}|Fever|100|105|aspirin|112|119\n"
        f"11|{sentence}|rash|142|146|aspirin|127|134\n"
        "12|Heparin-induced thrombocytopenia.|thrombocytopenia|16|32|Heparin|0|7\n"
    )
    (tmp_path / "DRUG-DOSE.rel").write_text("14|Heparin 5000 units was given.|5000 units|58|68|Heparin|50|57\n")
    (tmp_path / "ADE-NEG.txt").write_text("13 NEG No reaction was seen.\n11 NEG A second sentence.\n")
    docs = {d.doc_id: d for d in read_ade_corpus(tmp_path)}
    assert sorted(docs) == ["11-1", "11-2", "12-1", "13-1", "14-1"]
    first = docs["11-1"]
    assert mentions(first) == {("Effect", "Fever", 0), ("Drug", "aspirin", 12), ("Drug", "aspirin", 27),
                               ("Effect", "rash", 42)}
    pairs = {(first.entities[r.arg1].start, first.entities[r.arg2].start, r.type) for r in first.relations.values()}
    assert pairs == {(0, 12, "Drug-Effect"), (42, 27, "Drug-Effect")}  # each effect with the aspirin at its distance
    assert mentions(docs["12-1"]) == {("Effect", "thrombocytopenia", 16), ("Drug", "Heparin", 0)}
    assert mentions(docs["14-1"]) == {("Dose", "5000 units", 8), ("Drug", "Heparin", 0)}
    assert [r.type for r in docs["14-1"].relations.values()] == ["Drug-Dose"]
    assert not docs["13-1"].entities and docs["11-2"].text == "A second sentence."


def test_ade_malformed_lines_name_the_file_and_line(tmp_path):
    (tmp_path / "DRUG-AE.rel").write_text("1|A drug hurt.|hurt|7|11|drug|2|6\n1|too|few|fields\n")
    with pytest.raises(BratFormatError, match=r"DRUG-AE\.rel:2: malformed line \(4 fields, expected 8\)"):
        read_ade_corpus(tmp_path)
    (tmp_path / "DRUG-AE.rel").write_text("1|A drug hurt.|pain|7|11|drug|2|6\n")
    with pytest.raises(BratFormatError, match=r"DRUG-AE\.rel:1: mention not found in its sentence") as caught:
        read_ade_corpus(tmp_path)
    assert "A drug hurt" not in str(caught.value)
    with pytest.raises(FileNotFoundError, match="no DRUG-AE.rel"):
        read_ade_corpus(tmp_path / "elsewhere")


def test_psytar_sentences_become_documents_with_bio_spans(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("I\tO\nfelt\tO\nvery\tB-ADR\nsleepy\tI-ADR\nand\tO\ndizzy\tI-ADR\n\n\nOk\tO\n\nDepression\tB-SSI\n")
    docs = read_psytar_conll(path)
    assert [d.doc_id for d in docs] == ["train-00001", "train-00002", "train-00003"]
    assert docs[0].text == "I felt very sleepy and dizzy"
    assert mentions(docs[0]) == {("ADR", "very sleepy", 7), ("ADR", "dizzy", 23)}  # a stray I- starts an entity
    assert not docs[1].entities
    assert docs[2].entities == {"T1": Entity("T1", "SSI", ((0, 10),), "Depression")}
    path.write_text("fine\tO\nbad line\n")
    with pytest.raises(BratFormatError, match=r"train\.txt:2: malformed CoNLL line"):
        read_psytar_conll(path)


def test_read_documents_dispatches_on_format(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus format 'csv'; use one of: brat, ade-corpus-v2, psytar-conll"):
        read_documents(tmp_path, "csv")
    assert len(read_documents("bundled:maccrobat2020")) == 200


def test_the_shipped_readers_read_the_shared_corpora(shared_data):
    ade = read_documents(shared_data / "ade-corpus-v2", "ade-corpus-v2")
    relations = Counter(r.type for d in ade for r in d.relations.values())
    assert relations["Drug-Effect"] > 6800 and relations["Drug-Dose"] > 270  # 6,821 and 279 lines, a few repeated
    assert sum(1 for d in ade if any(e.type == "Effect" for e in d.entities.values())) == 4272
    assert all(d.text[e.start:e.end] == e.text for d in ade for e in d.entities.values())
    psytar = read_documents(shared_data / "psytar" / "data" / "all" / "full.txt", "psytar-conll")
    assert len(psytar) == 5591
    assert Counter(e.type for d in psytar for e in d.entities.values()) == {"ADR": 3543, "DI": 716, "WD": 444,
                                                                             "SSI": 340}


def test_one_schema_maps_both_adverse_effect_corpora(shared_data):
    schema = load_schema(ADVERSE_EFFECT)
    train, test = load_split(schema, shared_data / "ade-corpus-v2", format="ade-corpus-v2", test_documents=100,
                             annotated_only=True)
    assert all(d.entities for d in train) and not all(d.entities for d in test)  # the test split keeps every one
    assert {e.type for d in train for e in d.entities.values()} == {"AdverseEffect"}
    _, target = load_split(schema, None, shared_data / "psytar" / "data" / "all" / "test.txt",
                           format="psytar-conll", test_documents=50, seed=3)
    assert len(target) == 50 and {e.type for d in target for e in d.entities.values()} == {"AdverseEffect"}


def test_hold_out_takes_the_last_documents_by_id():
    docs = [Document(f"d{i}", "x") for i in (3, 1, 2, 0)]
    train, test = hold_out(docs, 1)
    assert [d.doc_id for d in train] == ["d0", "d1", "d2"] and [d.doc_id for d in test] == ["d3"]
    with pytest.raises(ValueError, match="cannot hold out 4 test documents of 4"):
        hold_out(docs, 4)


def test_test_documents_samples_a_test_folder_reproducibly():
    schema = load_schema("maccrobat-med")
    _, a = load_split(schema, None, "bundled:maccrobat2020", test_documents=5, seed=1)
    _, b = load_split(schema, None, "bundled:maccrobat2020", test_documents=5, seed=1)
    _, c = load_split(schema, None, "bundled:maccrobat2020", test_documents=5, seed=2)
    assert [d.doc_id for d in a] == [d.doc_id for d in b] != [d.doc_id for d in c]
