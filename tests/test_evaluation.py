"""n2c2 2018 Track 2 scoring: hand-computed cases per rule of the official counting and of one-to-one
counting, the report, the CLI helper, the ``evaluate`` metric, a cross-check of the official counting on
damaged copies of MACCROBAT against a naive implementation of its rules, and one on DDI of the one-to-one
counting against an exhaustive search."""
from __future__ import annotations

import json
import logging
import random
from collections import Counter
from pathlib import Path

import pytest

from clinical_prompt.brat import Document, Entity, Event, Relation, read_corpus, write_document
from clinical_prompt.cli import main
from clinical_prompt.evaluation.counting import count_official, count_one_to_one, maximum_matching
from clinical_prompt.evaluation.matching import Concept, concept_of, relations
from clinical_prompt.evaluation.n2c2 import evaluate_directories, evaluate_documents, run_evaluate
from clinical_prompt.evaluation.report import format_table
from clinical_prompt.evaluation.scores import Counts, macro
from clinical_prompt.quickstart import BUNDLED_CORPUS
from clinical_prompt.schema import load_schema


def _doc(*entities: tuple, rels: tuple = (), doc_id: str = "d", text: str = "") -> Document:
    """A document from ``(id, type, start, end)`` or ``(id, type, spans)`` and ``(id, type, arg1, arg2)``."""
    ents = {}
    for ent_id, type_, *where in entities:
        spans = tuple(where[0]) if len(where) == 1 else ((where[0], where[1]),)
        ents[ent_id] = Entity(ent_id, type_, spans)
    return Document(doc_id, text, entities=ents, relations={r[0]: Relation(*r) for r in rels})


def _micro(result: dict, kind: str = "concepts", mode: str = "strict") -> tuple[int, int, int]:
    m = result[kind][mode]["micro"]
    return m["tp"], m["fp"], m["fn"]


def _one(gold: Document, pred: Document, matching: str = "official") -> dict:
    return evaluate_documents({"d": gold}, {"d": pred}, matching=matching)


# --- concepts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("matching", ["official", "one-to-one"])
def test_identical_offsets_match_strict_and_overlap_only_lenient(matching):
    gold = _doc(("T1", "Drug", 0, 5), ("T2", "Drug", 10, 20))
    pred = _doc(("T1", "Drug", 0, 5), ("T2", "Drug", 12, 25))
    result = _one(gold, pred, matching)
    assert result["matching"] == matching
    assert _micro(result, mode="strict") == (1, 1, 1)
    assert _micro(result, mode="lenient") == (2, 0, 0)
    assert result["concepts"]["strict"]["micro"]["f1"] == pytest.approx(0.5)


def test_touching_spans_do_not_overlap():
    result = _one(_doc(("T1", "Drug", 0, 5)), _doc(("T1", "Drug", 5, 9)))
    assert _micro(result, mode="lenient") == (0, 1, 1)


def test_type_mismatch_is_a_false_positive_and_a_false_negative_per_type():
    result = _one(_doc(("T1", "Drug", 0, 5)), _doc(("T1", "Dosage", 0, 5)))
    for mode in ("strict", "lenient"):
        assert _micro(result, mode=mode) == (0, 1, 1)
        per_type = result["concepts"][mode]["per_type"]
        assert (per_type["Drug"]["tp"], per_type["Drug"]["fp"], per_type["Drug"]["fn"]) == (0, 0, 1)
        assert (per_type["Dosage"]["tp"], per_type["Dosage"]["fp"], per_type["Dosage"]["fn"]) == (0, 1, 0)


def test_discontinuous_spans_collapse_to_outer_bounds():
    gold = _doc(("T1", "Drug", ((10, 15), (20, 25))))
    assert concept_of(gold.entities["T1"]) == Concept("Drug", 10, 25)
    assert _micro(_one(gold, _doc(("T1", "Drug", 10, 25))), mode="strict") == (1, 0, 0)
    inner = _one(gold, _doc(("T1", "Drug", 16, 19)))  # inside the gap: overlaps the outer bounds
    assert _micro(inner, mode="strict") == (0, 1, 1)
    assert _micro(inner, mode="lenient") == (1, 0, 0)


def test_rule_a_prediction_on_an_already_claimed_gold_item_is_not_counted():
    gold = _doc(("T1", "Drug", 0, 10))
    pred = _doc(("T1", "Drug", 0, 10), ("T2", "Drug", 0, 10), ("T3", "Drug", 2, 8))
    official, one_to_one = _one(gold, pred), _one(gold, pred, "one-to-one")
    # T1 claims the gold item; the duplicate T2 is set aside in both modes, T3 only where it matches (lenient)
    assert _micro(official, mode="strict") == (1, 1, 0)  # T3 matches nothing strictly: a false positive
    assert _micro(official, mode="lenient") == (1, 0, 0)
    assert official["concepts"]["lenient"]["micro"]["precision"] == 1.0
    # one-to-one: every prediction counts, the two left over are false positives
    assert _micro(one_to_one, mode="strict") == (1, 2, 0)
    assert _micro(one_to_one, mode="lenient") == (1, 2, 0)
    assert one_to_one["concepts"]["lenient"]["micro"]["precision"] == pytest.approx(1 / 3)


def test_rule_one_lenient_prediction_claims_two_gold_items_and_a_later_one_is_dropped():
    gold = _doc(("T1", "Drug", 0, 5), ("T2", "Drug", 6, 10))
    pred = _doc(("T1", "Drug", 0, 10), ("T2", "Drug", 6, 10))
    # lenient: T1 claims both gold items but is one true positive (TP counts predictions), leaving one
    # false negative; T2 matches the claimed second item and is not counted
    assert _micro(_one(gold, pred), mode="lenient") == (1, 0, 1)
    assert _micro(_one(gold, pred), mode="strict") == (1, 1, 1)  # strict: T1 matches nothing, T2 claims T2
    assert _micro(_one(gold, pred, "one-to-one"), mode="lenient") == (2, 0, 0)
    # a prediction matching any claimed item is set aside, and still claims the free items it matches
    chain = _doc(("T1", "Drug", 0, 5), ("T2", "Drug", 3, 8), ("T3", "Drug", 6, 10))
    assert _micro(_one(gold, chain), mode="lenient") == (1, 0, 1)  # T2 set aside, claims gold T2; T3 set aside
    assert _micro(_one(gold, chain, "one-to-one"), mode="lenient") == (2, 1, 0)


def test_relation_duplicates_are_set_aside_as_concepts_are():
    ents = (("T1", "Strength", 0, 5), ("T2", "Drug", 10, 15), ("T3", "Drug", 11, 15))
    gold = _doc(*ents[:2], rels=(("R1", "Strength-Drug", "T1", "T2"),))
    twice = _doc(*ents, rels=(("R1", "Strength-Drug", "T1", "T2"), ("R2", "Strength-Drug", "T1", "T3")))
    assert _micro(_one(gold, twice), "relations", "lenient") == (1, 0, 0)
    assert _micro(_one(gold, twice), "relations", "strict") == (1, 1, 0)  # R2's Arg2 is not exact
    assert _micro(_one(gold, twice, "one-to-one"), "relations", "lenient") == (1, 1, 0)


def test_one_to_one_maximum_matching_finds_the_pairs_greedy_matching_loses():
    gold = [Concept("Drug", 0, 5), Concept("Drug", 6, 10)]
    wide, narrow = Concept("Drug", 3, 8), Concept("Drug", 0, 2)  # wide overlaps both golds, narrow the first
    # taken in order, wide would claim the first gold and leave narrow unmatched
    assert maximum_matching(gold, [wide, narrow], "lenient") == {0: 1, 1: 0}
    assert maximum_matching(gold, [narrow, wide], "lenient") == {0: 0, 1: 1}
    assert count_one_to_one(gold, [wide, narrow], "lenient") == Counts(tp=2, fp=0, fn=0)
    assert count_one_to_one(gold, [wide, narrow], "strict") == Counts(tp=0, fp=2, fn=2)
    # the official count takes them in order: wide claims both golds, narrow is set aside
    assert count_official(gold, [wide, narrow], "lenient") == Counts(tp=1, fp=0, fn=1)
    assert count_official(gold, [narrow, wide], "lenient") == Counts(tp=1, fp=0, fn=1)
    # an augmenting path along a chain: each link overlaps two golds, the last prediction the first gold only
    chain_gold = [Concept("Drug", 10 * i, 10 * i + 5) for i in range(50)]
    chain_pred = [Concept("Drug", 10 * i + 3, 10 * i + 12) for i in range(49)] + [Concept("Drug", 0, 2)]
    assert count_one_to_one(chain_gold, chain_pred, "lenient") == Counts(tp=50, fp=0, fn=0)
    # officially the first link claims two golds and every later one touches a claimed gold: set aside
    assert count_official(chain_gold, chain_pred, "lenient") == Counts(tp=1, fp=0, fn=49)
    for count in (count_official, count_one_to_one):
        with pytest.raises(ValueError, match="mode must be one of"):
            count(gold, [wide], "fuzzy")
    with pytest.raises(ValueError, match="matching must be one of"):
        evaluate_documents({}, {}, matching="greedy")


def test_micro_pools_counts_and_per_type_sums_to_micro():
    gold = _doc(("T1", "Drug", 0, 5), ("T2", "Route", 6, 9), ("T3", "Drug", 20, 24))
    pred = _doc(("T1", "Drug", 0, 5), ("T2", "Route", 6, 8), ("T4", "Form", 30, 33))
    strict = _one(gold, pred)["concepts"]["strict"]
    assert _micro({"concepts": {"strict": strict}}) == (1, 2, 2)
    per_type = strict["per_type"]
    assert sorted(per_type) == ["Drug", "Form", "Route"]
    assert sum(c["tp"] for c in per_type.values()) == 1
    assert per_type["Drug"]["recall"] == pytest.approx(0.5)
    assert per_type["Form"]["precision"] == 0.0


# --- relations ------------------------------------------------------------------------------------

_ENTITIES = (("T1", "Strength", 0, 5), ("T2", "Drug", 10, 15), ("T3", "Drug", 20, 25))


def test_relation_with_one_wrong_argument_does_not_match():
    gold = _doc(*_ENTITIES, rels=(("R1", "Strength-Drug", "T1", "T2"),))
    pred = _doc(*_ENTITIES, rels=(("R1", "Strength-Drug", "T1", "T3"),))
    result = _one(gold, pred)
    for mode in ("strict", "lenient"):
        assert _micro(result, "relations", mode) == (0, 1, 1)
    assert _micro(result, "concepts", "strict") == (3, 0, 0)


def test_relation_arguments_keep_their_order_and_type_must_agree():
    gold = _doc(*_ENTITIES, rels=(("R1", "Strength-Drug", "T1", "T2"),))
    swapped = _doc(*_ENTITIES, rels=(("R1", "Strength-Drug", "T2", "T1"),))
    retyped = _doc(*_ENTITIES, rels=(("R1", "Form-Drug", "T1", "T2"),))
    assert _micro(_one(gold, swapped), "relations", "lenient") == (0, 1, 1)
    assert _micro(_one(gold, retyped), "relations", "lenient") == (0, 1, 1)


def test_relation_matches_leniently_when_both_arguments_overlap():
    gold = _doc(*_ENTITIES, rels=(("R1", "Strength-Drug", "T1", "T2"),))
    pred = _doc(("A", "Strength", 1, 5), ("B", "Drug", 10, 14), rels=(("R9", "Strength-Drug", "A", "B"),))
    result = _one(gold, pred)
    assert _micro(result, "relations", "strict") == (0, 1, 1)
    assert _micro(result, "relations", "lenient") == (1, 0, 0)
    # an argument of the wrong concept type breaks the match even when it overlaps
    wrong_type = _doc(("A", "Dosage", 0, 5), ("B", "Drug", 10, 15), rels=(("R9", "Strength-Drug", "A", "B"),))
    assert _micro(_one(gold, wrong_type), "relations", "lenient") == (0, 1, 1)


def test_event_argument_stands_for_its_trigger_and_unknown_argument_raises():
    doc = _doc(("T1", "Drug", 0, 5), ("T2", "Dose", 6, 9), rels=(("R1", "Dose-Drug", "T2", "E1"),))
    doc.events["E1"] = Event("E1", "Drug", "T1")
    assert relations(doc)[0].arg2 == Concept("Drug", 0, 5)
    broken = _doc(("T1", "Drug", 0, 5), rels=(("R1", "Dose-Drug", "T9", "T1"),), doc_id="note-7")
    with pytest.raises(ValueError, match="note-7: relation R1 refers to unknown annotation T9"):
        relations(broken)


# --- documents, macro, zero division -------------------------------------------------------------


def _missing_case() -> tuple[dict, dict]:
    gold = {
        "a": _doc(("T1", "Drug", 0, 5), doc_id="a"),
        "b": _doc(("T1", "Drug", 0, 5), ("T2", "Drug", 6, 8), doc_id="b"),
    }
    pred = {"a": _doc(("T1", "Drug", 0, 5), doc_id="a"), "c": _doc(("T1", "Drug", 0, 3), doc_id="c")}
    return gold, pred


def test_rule_only_documents_on_both_sides_are_scored_and_the_others_named(caplog):
    gold, pred = _missing_case()
    with caplog.at_level(logging.WARNING, logger="clinical_prompt.evaluation"):
        result = evaluate_documents(gold, pred)
    assert result["documents"] == {"gold": 2, "pred": 2, "scored": 1, "missing": "skip",
                                   "missing_pred": ["b"], "missing_gold": ["c"]}
    assert _micro(result) == (1, 0, 0)  # a only
    assert result["concepts"]["strict"]["macro"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert [r.getMessage() for r in caplog.records] == [
        "documents without prediction, not scored (1): b",
        "documents without gold, not scored (1): c",
    ]


def test_rule_missing_as_empty_scores_them_as_misses(caplog):
    gold, pred = _missing_case()
    with caplog.at_level(logging.WARNING, logger="clinical_prompt.evaluation"):
        result = evaluate_documents(gold, pred, missing="empty")
    assert not caplog.records
    assert result["documents"]["scored"] == 3 and result["documents"]["missing"] == "empty"
    assert result["documents"]["missing_pred"] == ["b"] and result["documents"]["missing_gold"] == ["c"]
    assert _micro(result) == (1, 1, 2)  # b's two gold items are missed, c's prediction is a false positive
    # macro over a, b, c: a scores 1.0, b and c 0.0
    assert result["concepts"]["strict"]["macro"] == pytest.approx({"precision": 1 / 3, "recall": 1 / 3, "f1": 1 / 3})
    with pytest.raises(ValueError, match="missing must be one of"):
        evaluate_documents(gold, pred, missing="ignore")


def test_macro_is_the_mean_of_per_document_scores():
    gold = {
        "a": _doc(("T1", "Drug", 0, 5), ("T2", "Drug", 6, 9), doc_id="a"),
        "b": _doc(("T1", "Drug", 0, 5), doc_id="b"),
    }
    pred = {"a": _doc(("T1", "Drug", 0, 5), doc_id="a"), "b": _doc(("T1", "Drug", 1, 5), doc_id="b")}
    strict = evaluate_documents(gold, pred)["concepts"]["strict"]
    # a: P 1, R 1/2, F1 2/3; b: P 0, R 0, F1 0
    assert strict["macro"] == pytest.approx({"precision": 0.5, "recall": 0.25, "f1": 1 / 3})
    # micro differs: tp 1, fp 1, fn 2
    assert strict["micro"]["f1"] == pytest.approx(2 / 5)


def test_zero_division_gives_zero_and_empty_input_is_valid():
    result = _one(_doc(), _doc())
    for kind in ("concepts", "relations"):
        for mode in ("strict", "lenient"):
            scores = result[kind][mode]
            assert scores["micro"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 0}
            assert scores["macro"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
            assert scores["per_type"] == {}
    assert evaluate_documents({}, {})["documents"]["scored"] == 0
    assert Counts(tp=0, fp=3, fn=0).recall == 0.0 and Counts(tp=0, fp=0, fn=3).precision == 0.0
    assert macro([]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


@pytest.mark.parametrize("matching", ["official", "one-to-one"])
def test_rule_macro_counts_a_document_without_items_as_zero(matching):
    gold = {"a": _doc(("T1", "Drug", 0, 5), doc_id="a"), "empty": _doc(doc_id="empty")}
    strict = evaluate_documents(gold, gold, matching=matching)["concepts"]["strict"]
    assert strict["micro"]["f1"] == 1.0
    assert strict["macro"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5}


def test_gold_against_gold_gives_a_relation_macro_below_one_where_documents_lack_relations():
    drug = (("T1", "Strength", 0, 5), ("T2", "Drug", 6, 12))
    gold = {f"n{i:02}": _doc(*drug, rels=(("R1", "Strength-Drug", "T1", "T2"),) if i else (), doc_id=f"n{i:02}")
            for i in range(18)}
    result = evaluate_documents(gold, gold)
    for mode in ("strict", "lenient"):
        assert result["concepts"][mode]["micro"]["f1"] == result["concepts"][mode]["macro"]["f1"] == 1.0
        assert _micro(result, "relations", mode) == (17, 0, 0)
        assert result["relations"][mode]["macro"] == pytest.approx({"precision": 17 / 18, "recall": 17 / 18,
                                                                    "f1": 17 / 18})
    assert round(result["relations"]["strict"]["macro"]["f1"], 4) == 0.9444


def test_gold_against_gold_with_overlapping_gold_items():
    nested = _doc(("T1", "Drug", 0, 10), ("T2", "Drug", 3, 5), ("T3", "Dosage", 20, 25), ("T4", "Dosage", 20, 25))
    official, one_to_one = _one(nested, nested), _one(nested, nested, "one-to-one")
    # T1 claims the nested T2 (lenient) and T3 claims its identical twin T4 (both modes): T2 and T4 are set aside,
    # and each claiming prediction is one true positive for two gold items
    assert _micro(official, mode="lenient") == (2, 0, 2)
    assert _micro(official, mode="strict") == (3, 0, 1)
    for mode in ("strict", "lenient"):
        assert _micro(one_to_one, mode=mode) == (4, 0, 0)


@pytest.fixture(scope="module")
def maccrobat() -> list[Document]:
    schema = load_schema("maccrobat-med")
    return [schema.map_document(doc) for doc in read_corpus(BUNDLED_CORPUS).documents]


def test_gold_against_gold_on_maccrobat(maccrobat):
    gold = {doc.doc_id: doc for doc in maccrobat}
    result = evaluate_documents(gold, gold)
    with_relations = sum(bool(d.relations) for d in gold.values()) / len(gold)
    assert 0 < with_relations < 1
    for mode in ("strict", "lenient"):
        assert result["relations"][mode]["micro"]["f1"] == 1.0
        assert result["relations"][mode]["macro"]["f1"] == pytest.approx(with_relations)
    assert result["concepts"]["strict"]["micro"]["f1"] == 1.0
    # overlapping gold concepts of one type: the first claims the others, which are set aside
    lenient = result["concepts"]["lenient"]["micro"]
    assert lenient["fp"] == 0 and 0 < lenient["fn"] < 10
    assert _micro(evaluate_documents(gold, gold, matching="one-to-one"), mode="lenient")[1:] == (0, 0)


# --- report, directories, CLI helper -------------------------------------------------------------


def test_format_table_rows_carry_the_scores():
    gold = _doc(*_ENTITIES, rels=(("R1", "Strength-Drug", "T1", "T2"),))
    pred = _doc(("T1", "Strength", 0, 5), ("T2", "Drug", 10, 14), rels=(("R1", "Strength-Drug", "T1", "T2"),))
    lines = format_table(_one(gold, pred)).splitlines()
    assert lines[:2] == ["1 documents scored (1 gold, 1 predicted), matching: official",
                         "0 without prediction, 0 without gold: not scored"]
    drug = next(line.split() for line in lines if line.strip().startswith("Drug "))
    # Drug strict: tp 0, fp 1, fn 2 -> 0 / 0 / 0; lenient: tp 1, fp 0, fn 1 -> 1 / 0.5 / 0.6667
    assert drug == ["Drug", "0.0000", "0.0000", "0.0000", "1.0000", "0.5000", "0.6667"]
    relation = next(line.split() for line in lines if line.strip().startswith("Strength-Drug"))
    assert relation == ["Strength-Drug", "0.0000", "0.0000", "0.0000", "1.0000", "1.0000", "1.0000"]
    assert sum(line.strip().startswith("Overall (macro)") for line in lines) == 2


def _write_brat(directory: Path, doc_id: str, text: str, lines: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    (directory / f"{doc_id}.ann").write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_directories_with_and_without_schema_and_run_evaluate(tmp_path, capsys, caplog):
    text = "aspirin and other things"
    _write_brat(tmp_path / "gold", "n1", text, ["T1\tDRUG 0 7\taspirin", "T2\tOTHER 12 17\tother"])
    _write_brat(tmp_path / "pred", "n1", text, ["T1\tDRUG 0 7\taspirin"])
    _write_brat(tmp_path / "gold", "n2", text, ["T1\tGROUP 12 24\tother things"])
    assert _micro(evaluate_directories(tmp_path / "gold", tmp_path / "pred")) == (1, 0, 1)  # n2 is not scored
    assert _micro(evaluate_directories(tmp_path / "gold", tmp_path / "pred", missing="empty")) == (1, 0, 2)

    out = tmp_path / "scores" / "result.json"
    assert run_evaluate(str(tmp_path / "gold"), str(tmp_path / "pred"), "ddi", str(out)) == 0
    written = json.loads(out.read_text())
    assert _micro(written) == (1, 0, 0)  # OTHER is not a ddi concept
    assert written["matching"] == "official" and written["documents"]["missing_pred"] == ["n2"]
    assert written["schema"] == {"name": "ddi", "dropped": {
        "gold": {"concepts": {"type not in schema": 1}, "relations": {}},  # n2 is not scored: its GROUP not counted
        "pred": {"concepts": {}, "relations": {}}}}
    printed = capsys.readouterr().out
    assert "Overall (micro)" in printed
    assert "schema ddi dropped from the gold: 1 concepts (type not in schema 1)" in printed
    assert "schema ddi dropped from the predictions: nothing" in printed
    assert "documents without prediction, not scored (1): n2" in caplog.messages
    assert [p.name for p in out.parent.iterdir()] == ["result.json"]  # no temp file left behind


def test_rule_what_the_schema_drops_from_the_predictions_is_reported(tmp_path, capsys):
    text = "aspirin 10 mg fever"
    _write_brat(tmp_path / "gold", "n1", text, [
        "T1\tMedication 0 7\taspirin", "T2\tDosage 8 13\t10 mg", "R1\tMODIFY Arg1:T2 Arg2:T1"])
    _write_brat(tmp_path / "pred", "n1", text, [
        "T1\tMedication 0 7\taspirin", "T2\tDosage 8 13\t10 mg", "T3\tLab_value 14 19\tfever",
        "T4\tSign_symptom 14 19\tfever",
        "R1\tMODIFY Arg1:T2 Arg2:T1",
        "R2\tMODIFY Arg1:T2 Arg2:T1",  # a duplicate
        "R3\tMODIFY Arg1:T3 Arg2:T1",  # its Arg1 type is not in the schema
        "R4\tMODIFY Arg1:T4 Arg2:T1",  # no MODIFY relation of the schema takes a SignSymptom
        "R5\tOVERLAP Arg1:T1 Arg2:T2",  # not in the schema
    ])
    out = tmp_path / "result.json"
    assert main(["evaluate", "--gold", str(tmp_path / "gold"), "--pred", str(tmp_path / "pred"),
                 "--schema", "maccrobat-med", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["schema"]["dropped"]["pred"] == {
        "concepts": {"type not in schema": 1},
        "relations": {"type not in schema": 1, "argument not kept": 1, "argument types do not fit": 1,
                      "duplicate": 1},
    }
    assert result["schema"]["dropped"]["gold"] == {"concepts": {}, "relations": {}}
    assert _micro(result, "relations") == (1, 0, 0) and _micro(result) == (2, 1, 0)  # the SignSymptom is scored
    assert ("schema maccrobat-med dropped from the predictions: 1 concepts (type not in schema 1), 4 relations "
            "(type not in schema 1, argument not kept 1, argument types do not fit 1, duplicate 1)"
            ) in capsys.readouterr().out


def test_cli_matching_and_missing_flags(tmp_path, capsys):
    text = "aspirin"
    _write_brat(tmp_path / "gold", "n1", text, ["T1\tDrug 0 7\taspirin"])
    _write_brat(tmp_path / "gold", "n2", text, ["T1\tDrug 0 7\taspirin"])
    _write_brat(tmp_path / "pred", "n1", text, ["T1\tDrug 0 7\taspirin", "T2\tDrug 0 3\tasp"])
    gold, pred, out = str(tmp_path / "gold"), str(tmp_path / "pred"), str(tmp_path / "r.json")
    assert main(["evaluate", "--gold", gold, "--pred", pred, "--json", out]) == 0
    assert _micro(json.loads(Path(out).read_text()), mode="lenient") == (1, 0, 0)
    assert main(["evaluate", "--gold", gold, "--pred", pred, "--json", out, "--matching", "one-to-one",
                 "--missing-as-empty"]) == 0
    result = json.loads(Path(out).read_text())
    assert result["matching"] == "one-to-one" and result["documents"]["missing"] == "empty"
    assert _micro(result, mode="lenient") == (1, 1, 1)
    assert "matching: one-to-one" in capsys.readouterr().out
    assert main(["evaluate", "--config", "x.yaml", "--matching", "one-to-one"]) == 2
    assert "leave out --gold, --pred, --schema, --json, --matching" in capsys.readouterr().err


def test_run_evaluate_reports_unreadable_input(tmp_path, capsys):
    assert run_evaluate(str(tmp_path / "absent"), str(tmp_path), None, None) == 2
    _write_brat(tmp_path / "gold", "n1", "abc", ["T1\tDRUG 0 9\tabc"])  # offset beyond the text
    assert run_evaluate(str(tmp_path / "gold"), str(tmp_path), None, None) == 2
    err = capsys.readouterr().err
    assert "n1.ann:1: offset out of range" in err and "abc" not in err.replace(str(tmp_path), "")
    (tmp_path / "empty").mkdir()
    assert run_evaluate(str(tmp_path / "empty"), str(tmp_path / "empty"), None, None) == 2
    _write_brat(tmp_path / "other", "n1", "abc", ["T1\tDRUG 0 3\tabc"])
    assert run_evaluate(str(tmp_path / "other"), str(tmp_path / "empty"), None, None) == 2  # nothing to score
    lines = (err + capsys.readouterr().err).splitlines()
    errors = [line for line in lines if line.startswith("clinical-prompt: error: ")]
    assert len(errors) == 4, lines
    assert errors[-1].endswith(f"no document of {tmp_path / 'other'} has a prediction in {tmp_path / 'empty'} "
                               "(--missing-as-empty scores them as misses)")


# --- evaluate metric ------------------------------------------------------------------------------


def test_metric_loads_offline_by_path_and_agrees(monkeypatch):
    pytest.importorskip("evaluate")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    from clinical_prompt.evaluation.metric import load_metric
    from clinical_prompt.evaluation.metric.n2c2_metric import document_to_example

    gold = {"0": _doc(*_ENTITIES, rels=(("R1", "Strength-Drug", "T1", "T2"),), doc_id="0"), "1": _doc(doc_id="1")}
    pred = {
        "0": _doc(
            ("T1", "Strength", 0, 4),
            ("T2", "Drug", ((10, 12), (13, 15))),
            ("T3", "Strength", 1, 5),
            rels=(("R1", "Strength-Drug", "T1", "T2"),),
            doc_id="0",
        ),
        "1": _doc(("T1", "Form", 0, 3), doc_id="1"),
    }
    metric = load_metric()
    examples = {
        "predictions": [document_to_example(pred[k]) for k in ("0", "1")],
        "references": [document_to_example(gold[k]) for k in ("0", "1")],
    }
    result = metric.compute(**examples)
    assert result == evaluate_documents(gold, pred)
    assert _micro(result, "relations", "lenient") == (1, 0, 0)
    assert _micro(result, "concepts", "lenient") == (2, 1, 1)  # T3 set aside, Form a false positive
    one_to_one = metric.compute(**examples, matching="one-to-one")
    assert one_to_one == evaluate_documents(gold, pred, matching="one-to-one")
    assert _micro(one_to_one, "concepts", "lenient") == (2, 2, 1)


# --- cross-checks on real data against naive implementations of the counting rules --------------


def _perturb(gold: Document, rng: random.Random, types: list[str], rel_types: list[str]) -> Document:
    """Predictions for one document: now and then none at all; entities dropped, shifted, retyped, split into
    discontinuous fragments, duplicated exactly or shifted; spans over two neighbours of one type and spurious
    entities put anywhere in the order; relations dropped, retyped, flipped, duplicated, spurious."""
    text = gold.text
    if rng.random() < 0.04:
        return Document(gold.doc_id, text)

    def valid(spans: tuple) -> bool:
        return all(0 <= s < e <= len(text) and not set(text[s:e]) & {"\n", "\r", "\t"} for s, e in spans) and all(
            a[1] <= b[0] for a, b in zip(spans, spans[1:])
        )

    def shifted(spans: tuple) -> tuple:
        """Outer bounds moved by a few characters (inner fragment bounds kept)."""
        bounds = [list(span) for span in spans]
        bounds[0][0] += rng.choice((-3, -1, 0, 1, 2))
        bounds[-1][1] += rng.choice((-2, -1, 0, 1, 3))
        new = tuple(tuple(span) for span in bounds)
        return new if valid(new) else spans

    def split(spans: tuple) -> tuple:
        """Two fragments with a one-character gap, same outer bounds."""
        (start, end), middle = spans[0], (spans[0][0] + spans[0][1]) // 2
        new = ((start, middle), (middle + 1, end))
        return new if len(spans) == 1 and start < middle and valid(new) else spans

    entities: list[Entity] = []
    copies: dict[str, str] = {}  # copy id -> original id
    for ent in gold.entities.values():
        r = rng.random()
        if r < 0.1:
            continue
        if r < 0.3:
            ent = Entity(ent.id, ent.type, shifted(ent.spans))
        elif r < 0.38:
            ent = Entity(ent.id, rng.choice([t for t in types if t != ent.type]), ent.spans)
        elif r < 0.45:
            ent = Entity(ent.id, ent.type, split(ent.spans))
        entities.append(Entity(ent.id, ent.type, ent.spans))  # text "" is filled in on writing
        if rng.random() < 0.1:
            copy_id = f"T{9000 + len(entities)}"
            copies[copy_id] = ent.id
            entities.append(Entity(copy_id, ent.type, ent.spans if rng.random() < 0.5 else shifted(ent.spans)))
    extra = []
    ordered = sorted(gold.entities.values(), key=lambda e: e.spans[0][0])
    for i, (a, b) in enumerate(zip(ordered, ordered[1:])):
        spans = ((a.spans[0][0], b.spans[-1][1]),)
        if a.type == b.type and rng.random() < 0.2 and valid(spans):
            extra.append(Entity(f"T{7000 + i}", a.type, spans))
    for i in range(rng.randint(0, 3)):
        start = rng.randrange(max(1, len(text) - 20))
        spans = ((start, start + rng.randint(2, 15)),)
        if valid(spans):
            extra.append(Entity(f"T{8000 + i}", rng.choice(types), spans))
    for ent in extra:
        entities.insert(rng.randint(0, len(entities)), ent)
    kept = {ent.id: ent for ent in entities}

    rels: dict[str, Relation] = {}
    for rel in gold.relations.values():
        if rel.arg1 not in kept or rel.arg2 not in kept or rng.random() < 0.1:
            continue
        r = rng.random()
        type_ = rng.choice(rel_types) if r < 0.1 else rel.type
        arg1, arg2 = (rel.arg2, rel.arg1) if 0.1 <= r < 0.15 else (rel.arg1, rel.arg2)
        rels[rel.id] = Relation(rel.id, type_, arg1, arg2)
        if rng.random() < 0.1:  # the same relation again, or over a copy of its Arg2
            copy = next((c for c, original in copies.items() if original == arg2), arg2)
            rels[f"R{800 + len(rels)}"] = Relation(f"R{800 + len(rels)}", type_, arg1, copy)
    ids = list(kept)
    if len(ids) > 1 and rng.random() < 0.5:
        a, b = rng.sample(ids, 2)
        rels["R900"] = Relation("R900", rng.choice(rel_types), a, b)
    return Document(gold.doc_id, text, entities=kept, relations=rels)


def _naive_items(doc: Document) -> dict[str, list]:
    """Concepts (type, first start, last end) and relations (type, arg1 concept, arg2 concept) in file order."""
    tags = {}
    for ent in doc.entities.values():
        tags[ent.id] = (ent.type, ent.spans[0][0], ent.spans[-1][1])
    rels = []
    for rel in doc.relations.values():
        rels.append((rel.type, tags[rel.arg1], tags[rel.arg2]))
    return {"concepts": list(tags.values()), "relations": rels}


def _naive_official(gol: list, sys: list, mode: str, seen: Counter) -> tuple[int, int, int]:
    """The official script's rules in plain loops: claims in prediction order, set-aside predictions, and TP
    counting predictions; ``seen`` counts the situations met."""
    claimed = []
    kept = list(range(len(sys)))
    for si in range(len(sys)):
        hits = 0
        for gi in range(len(gol)):
            if _naive_equals(gol[gi], sys[si], mode):
                hits += 1
                if gi not in claimed:
                    claimed.append(gi)
                elif si in kept:
                    kept.remove(si)
        if si not in kept:
            seen[mode, "set aside"] += 1
        elif hits > 1:
            seen[mode, "one prediction claims several gold items"] += 1
    tp = 0
    for si in kept:
        if any(_naive_equals(g, sys[si], mode) for g in gol):
            tp += 1
    return tp, len(kept) - tp, len(gol) - tp


def test_official_counts_equal_a_naive_count_on_24_damaged_copies_of_maccrobat(maccrobat):
    schema = load_schema("maccrobat-med")
    types, rel_types = list(schema.concept_names), list(schema.relation_names)
    seen: Counter = Counter()
    for seed in range(24):
        rng = random.Random(seed)
        gold = {doc.doc_id: doc for doc in rng.sample(maccrobat, 20)}
        pred = {d: _perturb(doc, rng, types, rel_types) for d, doc in gold.items() if rng.random() > 0.05}
        pred["extra"] = _perturb(maccrobat[seed], rng, types, rel_types)  # no gold file: not scored
        ours = evaluate_documents(gold, pred)
        both = [(_naive_items(gold[d]), _naive_items(pred[d])) for d in gold if d in pred]
        assert ours["documents"]["scored"] == len(both)
        seen["documents without prediction"] += len(gold) - len(both)
        seen["empty predictions"] += sum(not p["concepts"] for _, p in both)
        for kind in ("concepts", "relations"):
            for mode in ("strict", "lenient"):
                per_doc = [_naive_official(g[kind], p[kind], mode, seen) for g, p in both]
                scores = ours[kind][mode]
                assert _micro(ours, kind, mode) == tuple(sum(column) for column in zip(*per_doc)), (seed, kind, mode)
                naive_macro = [sum(column) / len(per_doc) for column in zip(*(_naive_prf(*c) for c in per_doc))]
                assert [scores["macro"][k] for k in ("precision", "recall", "f1")] == pytest.approx(naive_macro)
                per_type = {}
                for t in sorted({item[0] for g, p in both for item in g[kind] + p[kind]}):
                    counts = [_naive_official([x for x in g[kind] if x[0] == t], [x for x in p[kind] if x[0] == t],
                                              mode, Counter()) for g, p in both]
                    per_type[t] = tuple(sum(column) for column in zip(*counts))
                assert {t: (c["tp"], c["fp"], c["fn"]) for t, c in scores["per_type"].items()} == per_type
        one_to_one = evaluate_documents(gold, pred, matching="one-to-one")
        seen["differs from one-to-one"] += any(
            _micro(ours, kind, mode) != _micro(one_to_one, kind, mode)
            for kind in ("concepts", "relations") for mode in ("strict", "lenient"))
    # every rule was put to the test
    assert seen["documents without prediction"] and seen["empty predictions"]
    for mode in ("strict", "lenient"):
        assert seen[mode, "set aside"]
    assert seen["lenient", "one prediction claims several gold items"]
    assert seen["differs from one-to-one"] >= 20


def _naive_read(directory: Path) -> dict[str, dict[str, list]]:
    """Per file: tags (type, start, end) and relations (type, arg1 tag, arg2 tag), read as the official script does."""
    docs = {}
    for path in sorted(directory.glob("*.ann")):
        tags, rels = {}, []
        lines = path.read_text(encoding="utf-8").splitlines()
        for line in lines:
            if line.startswith("T"):
                tid, middle, _ = line.split("\t", 2)
                parts = middle.split(" ")  # "TYPE 10 15;20 25" -> outer bounds 10, 25
                tags[tid] = (parts[0], int(parts[1]), int(parts[-1]))
        for line in lines:
            if line.startswith("R"):
                rtype, arg1, arg2 = line.split("\t")[1].split()
                rels.append((rtype, tags[arg1.split(":")[1]], tags[arg2.split(":")[1]]))
        docs[path.stem] = {"concepts": list(tags.values()), "relations": rels}
    return docs


def _naive_tag_equals(g: tuple, s: tuple, mode: str) -> bool:
    if mode == "strict":
        return g == s
    return g[0] == s[0] and g[2] > s[1] and g[1] < s[2]


def _naive_equals(g: tuple, s: tuple, mode: str) -> bool:
    if isinstance(g[1], tuple):  # a relation
        return g[0] == s[0] and _naive_tag_equals(g[1], s[1], mode) and _naive_tag_equals(g[2], s[2], mode)
    return _naive_tag_equals(g, s, mode)


def _naive_edges(gol: list, sys: list, mode: str) -> set[tuple[int, int]]:
    """Every (prediction, gold) index pair that matches."""
    return {(si, gi) for si, s in enumerate(sys) for gi, g in enumerate(gol) if _naive_equals(g, s, mode)}


def _naive_groups(edges: set[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """The edges split into connected groups (no edge joins two groups)."""
    groups: list[list[tuple[int, int]]] = []
    for edge in sorted(edges):
        joined = [g for g in groups if any(e[0] == edge[0] or e[1] == edge[1] for e in g)]
        groups = [g for g in groups if g not in joined] + [[edge] + [e for g in joined for e in g]]
    return groups


def _naive_best(edges: list[tuple[int, int]]) -> int:
    """Maximum one-to-one matching of a small group, by trying every choice for its first edge."""
    if not edges:
        return 0
    (si, gi), rest = edges[0], edges[1:]
    without = _naive_best(rest)
    with_it = 1 + _naive_best([e for e in rest if e[0] != si and e[1] != gi])
    return max(without, with_it)


def _naive_counts(gol: list, sys: list, mode: str) -> tuple[int, int, int]:
    """One-to-one counts: an exhaustive maximum matching within each connected group of matches."""
    groups = _naive_groups(_naive_edges(gol, sys, mode))
    assert all(len(g) <= 16 for g in groups), "group too large for the exhaustive search"
    tp = sum(_naive_best(g) for g in groups)
    return tp, len(sys) - tp, len(gol) - tp


def _naive_prf(tp: int, fp: int, fn: int) -> list[float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return [p, r, 2 * p * r / (p + r) if p + r else 0.0]


def _naive_evaluate(gold_dir: Path, pred_dir: Path, kind: str, mode: str) -> dict:
    """One-to-one micro counts over all types at once, macro P/R/F1, and counts per type (each type on its own),
    every document of either side scored."""
    gold, pred = _naive_read(gold_dir), _naive_read(pred_dir)
    empty = {"concepts": [], "relations": []}
    pairs = [(gold.get(d, empty)[kind], pred.get(d, empty)[kind]) for d in sorted(set(gold) | set(pred))]
    per_doc = [_naive_counts(g, s, mode) for g, s in pairs]
    micro = tuple(sum(column) for column in zip(*per_doc))
    macro_ = [sum(column) / len(per_doc) for column in zip(*(_naive_prf(*c) for c in per_doc))]
    per_type = {}
    for t in {item[0] for g, s in pairs for item in g + s}:
        counts = [_naive_counts([x for x in g if x[0] == t], [x for x in s if x[0] == t], mode) for g, s in pairs]
        per_type[t] = tuple(sum(column) for column in zip(*counts))
    return {"micro": micro, "macro": macro_, "per_type": per_type}


@pytest.mark.slow
def test_one_to_one_counts_equal_an_exhaustive_count_on_ddi(tmp_path, shared_data):
    gold_dir = shared_data / "ddi-corpus-2013-brat" / "Test" / "DrugBank"
    if not gold_dir.is_dir():
        pytest.skip("the DDI corpus is not in ../shared/data")
    gold_docs = read_corpus(gold_dir).documents
    types = sorted({e.type for d in gold_docs for e in d.entities.values()})
    rel_types = sorted({r.type for d in gold_docs for r in d.relations.values()})
    rng = random.Random(2018)
    pred_dir = tmp_path / "pred"
    for doc in gold_docs:
        if rng.random() < 0.05:
            continue  # no prediction for this document
        write_document(_perturb(doc, rng, types, rel_types), pred_dir, write_text=True)
    extra = _perturb(gold_docs[0], rng, types, rel_types)
    write_document(Document("zz-extra", extra.text, entities=extra.entities), pred_dir, write_text=True)

    ours = evaluate_directories(gold_dir, pred_dir, matching="one-to-one", missing="empty")
    assert ours["documents"]["missing_gold"] == ["zz-extra"] and ours["documents"]["missing_pred"]
    for kind in ("concepts", "relations"):
        for mode in ("strict", "lenient"):
            naive, scores = _naive_evaluate(gold_dir, pred_dir, kind, mode), ours[kind][mode]
            assert _micro(ours, kind, mode) == naive["micro"]
            assert [scores["macro"][k] for k in ("precision", "recall", "f1")] == pytest.approx(naive["macro"])
            assert {t: (c["tp"], c["fp"], c["fn"]) for t, c in scores["per_type"].items()} == naive["per_type"]
    # every prediction is counted once; strict and lenient differ; both one-to-one situations occur
    n_pred = sum(len(d.entities) for d in read_corpus(pred_dir).documents)
    assert sum(_micro(ours, "concepts", "lenient")[:2]) == n_pred
    assert _micro(ours, "concepts", "strict") != _micro(ours, "concepts", "lenient")
    assert _micro(ours, "relations", "strict") != _micro(ours, "relations", "lenient")
    relations_strict = ours["relations"]["strict"]["micro"]
    assert 0 < relations_strict["tp"] and 0 < relations_strict["fn"]
    gold, pred = _naive_read(gold_dir), _naive_read(pred_dir)
    both = sorted(set(gold) & set(pred))
    edges = [_naive_edges(gold[d]["concepts"], pred[d]["concepts"], "lenient") for d in both]
    assert any(len({g for _, g in e}) < len(e) for e in edges)  # a gold item hit by two predictions
    assert any(len({s for s, _ in e}) < len(e) for e in edges)  # a prediction over two gold items


@pytest.mark.slow
def test_gold_scored_against_itself_on_ddi(shared_data):
    gold_dir = shared_data / "ddi-corpus-2013-brat" / "Test"
    if not gold_dir.is_dir():
        pytest.skip("the DDI corpus is not in ../shared/data")
    documents = read_corpus(gold_dir).documents
    official, one_to_one = evaluate_directories(gold_dir, gold_dir), evaluate_directories(gold_dir, gold_dir,
                                                                                          matching="one-to-one")
    for kind in ("concepts", "relations"):
        # every document with items of the kind scores 1.0, the others 0.0
        having = sum(bool(doc.entities if kind == "concepts" else doc.relations) for doc in documents)
        for mode in ("strict", "lenient"):
            micro = one_to_one[kind][mode]["micro"]
            assert (micro["precision"], micro["recall"], micro["f1"]) == (1.0, 1.0, 1.0)
            assert micro["fp"] == micro["fn"] == 0 and micro["tp"] > 0
            assert one_to_one[kind][mode]["macro"] == pytest.approx(
                dict.fromkeys(("precision", "recall", "f1"), having / len(documents)))
        assert official[kind]["strict"] == one_to_one[kind]["strict"]
    # overlapping gold drugs: the first claims the others, which are set aside
    assert official["concepts"]["lenient"]["micro"]["fn"] > 0 == official["concepts"]["lenient"]["micro"]["fp"]
