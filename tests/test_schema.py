"""Tests for task schemas: built-ins, validation of schema files, and mapping BRAT documents."""
from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from clinical_prompt.brat import (
    Attribute,
    Document,
    Entity,
    Event,
    Relation,
    read_corpus,
    read_document,
    write_document,
)
from clinical_prompt.schema import SchemaError, TaskSchema, builtin_schemas, fold_labels, load_schema

BUILTINS = ["ddi", "maccrobat-med", "n2c2-2018", "n2c2-2022-sdoh", "sdoh-mtsamples"]


def _entity(ann_id: str, type_: str, start: int) -> Entity:
    return Entity(ann_id, type_, ((start, start + 2),))


# ---------------------------------------------------------------- built-ins


def test_builtins_are_listed_and_load():
    assert builtin_schemas() == BUILTINS
    for name in BUILTINS:
        schema = load_schema(name)
        assert schema.name == name
        for relation in schema.relations:
            assert relation.format_query("X") != relation.query and "X" in relation.format_query("X")


def test_n2c2_2018_has_nine_concepts_and_eight_drug_relations():
    schema = load_schema("n2c2-2018")
    attrs = ["Strength", "Form", "Dosage", "Frequency", "Route", "Duration", "Reason", "ADE"]
    assert schema.concept_names == ("Drug", *attrs)
    assert schema.relation_names == tuple(f"{a}-Drug" for a in attrs)
    for relation, attr in zip(schema.relations, attrs):
        assert (relation.heads, relation.tails, relation.head_arg) == (("Drug",), (attr,), "Arg2")
    assert schema.concept("Drug").query == "Find the drug events including names, brand names, and collective names."
    assert schema.relation("Dosage-Drug").format_query("aspirin") == "What is the dosage of aspirin?"


def test_n2c2_2022_sdoh_has_fourteen_query_types_with_labels():
    schema = load_schema("n2c2-2022-sdoh")
    triggers = ("Alcohol", "Drug", "Tobacco", "Employment", "LivingStatus")
    arguments = (
        "StatusTime", "StatusEmploy", "TypeLiving", "Amount", "Duration", "Frequency", "History", "Method", "Type")
    assert schema.concept_names == triggers + arguments
    assert set(schema.concept("StatusTime").labels) >= {"current", "past", "none"}
    assert schema.concept("StatusEmploy").labels == (
        "employed", "unemployed", "retired", "on_disability", "student", "homemaker")
    assert schema.concept("TypeLiving").labels == ("alone", "with_family", "with_others", "homeless")
    assert {t for r in schema.relations for t in r.tails} == set(arguments)
    assert {h for r in schema.relations for h in r.heads} == set(triggers)


@pytest.mark.parametrize("name", BUILTINS)
def test_to_dict_is_json_safe_and_round_trips(name, tmp_path):
    schema = load_schema(name)
    assert TaskSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema
    schema.save(tmp_path / "schema.yaml")
    assert load_schema(tmp_path / "schema.yaml") == schema
    assert [p.name for p in tmp_path.iterdir()] == ["schema.yaml"]


# ---------------------------------------------------------------- invalid schema files

VALID = {
    "name": "toy",
    "concepts": [{"name": "Drug", "query": "Find drugs."}, {"name": "Dose", "query": "Find doses."},
                 {"name": "Status", "query": "Find status.", "labels": ["on", "off"]}],
    "relations": [
        {"name": "Dose-Drug", "head": "Drug", "tails": ["Dose"], "query": "Dose of {head}?", "head_arg": "Arg2"},
        {"name": "Drug-Status", "head": ["Drug"], "tails": ["Status"], "query": "Status of {head}?"},
        {"name": "Drug-Drug", "head": "Drug", "tails": ["Drug"], "query": "What goes with {head}?"},
    ],
    "mapping": {"concepts": {"Medication": "Drug"}, "relations": {"MODIFY": ["Dose-Drug"]},
                "event_arguments": ["Drug-Status"], "label_attributes": {"Status": "StatusVal"}},
}


def _set(path: str, value):
    def edit(d):
        *keys, last = path.split("/")
        for k in keys:
            d = d[int(k)] if k.isdigit() else d[k]
        if value is KeyError:
            del d[int(last) if last.isdigit() else last]
        elif last.isdigit():
            d[int(last)] = value
        else:
            d[last] = value
    return edit


@pytest.mark.parametrize(
    "edit, field, problem",
    [
        (_set("relations/2/head", "Drg"), "relations[2].head", "unknown concept 'Drg'"),
        (_set("relations/1/head", ["Drug", "Dosis"]), "relations[1].head[1]", "unknown concept 'Dosis'"),
        (_set("relations/0/tails", []), "relations[0].tails", "at least one"),
        (_set("concepts/1/query", KeyError), "concepts[1].query", "missing"),
        (_set("concepts/1/query", " "), "concepts[1].query", "non-empty string"),
        (_set("relations/0/query", "Dose of the drug?"), "relations[0].query", "{head}"),
        (_set("relations/0/query", "Dose of {drug}?"), "relations[0].query", "{head}"),
        (_set("relations/0/query", "Dose of {head?"), "relations[0].query", "braces"),
        (_set("concepts/2/name", "Drug"), "concepts[2].name", "duplicate name 'Drug'"),
        (_set("relations/2/name", "Dose-Drug"), "relations[2].name", "duplicate name 'Dose-Drug'"),
        (_set("concepts/2/labels", ["on", "on"]), "concepts[2].labels[1]", "duplicate"),
        (_set("concepts/0/synonyms", ["med"]), "concepts[0].synonyms", "unknown key"),
        (_set("version", 2), "version", "unknown key"),
        (_set("mapping/rename", {}), "mapping.rename", "unknown key"),
        (_set("relations/0/head_arg", "arg2"), "relations[0].head_arg", "Arg1, Arg2"),
        (_set("mapping/concepts/Medication", "Drg"), "mapping.concepts.Medication", "unknown concept 'Drg'"),
        (_set("mapping/relations/MODIFY", ["Dose-Drug", "X"]), "mapping.relations.MODIFY[1]", "unknown relation 'X'"),
        (_set("mapping/event_arguments", ["Dose-Drug"]), "mapping.event_arguments[0]", "head_arg Arg1"),
        (_set("mapping/label_attributes/Drug", "DrugVal"), "mapping.label_attributes.Drug", "concept with labels"),
        (_set("concepts", []), "concepts", "at least one"),
        (_set("name", KeyError), "name", "missing"),
    ],
)
def test_invalid_schema_file_names_file_and_field(tmp_path, edit, field, problem):
    data = copy.deepcopy(VALID)
    edit(data)
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(SchemaError) as info:
        load_schema(path)
    assert str(info.value).startswith(f"{path}: {field}: ")
    assert problem in info.value.problem
    assert info.value.field == field


def test_valid_custom_schema_loads_from_yaml(tmp_path):
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(VALID), encoding="utf-8")
    schema = load_schema(str(path))
    assert schema.concept_names == ("Drug", "Dose", "Status")
    assert schema.mapping.relations == {"MODIFY": ("Dose-Drug",)}


def test_unreadable_schema_sources(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nconcepts: [\n", encoding="utf-8")
    with pytest.raises(SchemaError, match=rf"^{bad}: line \d+: not valid YAML"):
        load_schema(bad)
    with pytest.raises(SchemaError, match="no such file or built-in schema"):
        load_schema("n2c2-2019")
    with pytest.raises(SchemaError, match=r"^<dict>: schema: expected a mapping"):
        TaskSchema.from_dict(["not", "a", "schema"])


# ---------------------------------------------------------------- mapping documents


def test_map_n2c2_2018_keeps_order_and_drops_misfits():
    doc = Document("d", "x" * 40, entities={
        "T1": _entity("T1", "Drug", 0), "T2": _entity("T2", "Strength", 3), "T3": _entity("T3", "Form", 6),
        "T4": _entity("T4", "Negation", 9)})
    doc.relations = {
        "R1": Relation("R1", "Strength-Drug", "T2", "T1"),
        "R2": Relation("R2", "Strength-Drug", "T3", "T1"),  # Form is not a Strength
        "R3": Relation("R3", "Form-Drug", "T1", "T3"),  # arguments swapped: the head must be Arg2
        "R4": Relation("R4", "Negates", "T4", "T1"),
    }
    mapped = load_schema("n2c2-2018").map_document(doc)
    assert sorted(mapped.entities) == ["T1", "T2", "T3"]
    assert mapped.relations == {"R1": Relation("R1", "Strength-Drug", "T2", "T1")}
    assert doc.entities["T4"].type == "Negation" and len(doc.relations) == 4  # the source is untouched


def test_map_resolves_event_arguments_and_merges_renamed_types():
    doc = Document("d", "x" * 40, entities={
        "T1": _entity("T1", "Medication", 0), "T2": _entity("T2", "Dose", 3), "T3": _entity("T3", "Status", 6)})
    schema = TaskSchema.from_dict({**VALID, "mapping": {**VALID["mapping"], "concepts": {
        "Medication": "Drug", "Dose": "Dose", "Status": "Status"}}})
    doc.events = {"E1": Event("E1", "Medication", "T1", (("Status", "T3"),))}
    doc.relations = {"R7": Relation("R7", "MODIFY", "T2", "E1"), "R8": Relation("R8", "MODIFY", "T2", "E1")}
    doc.attributes = {"A1": Attribute("A1", "StatusVal", "T3", "on"), "A2": Attribute("A2", "Negated", "E1")}
    mapped = schema.map_document(doc)
    assert {e.id: e.type for e in mapped.entities.values()} == {"T1": "Drug", "T2": "Dose", "T3": "Status"}
    assert mapped.relations == {  # R8 repeats R7; the event link gets the next free R id
        "R7": Relation("R7", "Dose-Drug", "T2", "T1"), "R9": Relation("R9", "Drug-Status", "T1", "T3")}
    assert mapped.attributes == {"A1": Attribute("A1", "StatusVal", "T3", "on")}
    assert not mapped.events


def test_map_shac_style_document_keeps_values_as_labels():
    # Alcohol and Drug share one StatusTime argument; the Employment status value is not in the label set.
    ents = [("T1", "Alcohol"), ("T2", "StatusTime"), ("T3", "Drug"), ("T4", "Type"), ("T5", "Employment"),
            ("T6", "StatusEmploy"), ("T7", "LivingStatus"), ("T8", "TypeLiving"), ("T9", "StatusTime")]
    doc = Document("d", "x" * 40, entities={i: _entity(i, t, 3 * n) for n, (i, t) in enumerate(ents)})
    doc.events = {
        "E1": Event("E1", "Alcohol", "T1", (("Status", "T2"),)),
        "E2": Event("E2", "Drug", "T3", (("Status", "T2"), ("Type", "T4"), ("Type2", "T6"))),
        "E3": Event("E3", "Employment", "T5", (("Status", "T6"),)),
        "E4": Event("E4", "LivingStatus", "T7", (("Status", "T9"), ("Type", "T8"))),
    }
    doc.attributes = {"A1": Attribute("A1", "StatusTimeVal", "T2", "none"),
                      "A2": Attribute("A2", "StatusEmployVal", "T6", "self_employed"),
                      "A3": Attribute("A3", "TypeLivingVal", "T8", "with_family"),
                      "A4": Attribute("A4", "StatusTimeVal", "T9", "current")}
    mapped = load_schema("n2c2-2022-sdoh").map_document(doc)
    assert sorted((r.type, r.arg1, r.arg2) for r in mapped.relations.values()) == [
        ("Event-StatusEmploy", "T5", "T6"), ("Event-StatusTime", "T1", "T2"), ("Event-StatusTime", "T3", "T2"),
        ("Event-StatusTime", "T7", "T9"), ("Event-Type", "T3", "T4"), ("Event-TypeLiving", "T7", "T8")]
    assert [r.id for r in mapped.relations.values()] == [f"R{i}" for i in range(1, 7)]
    folded = fold_labels(mapped)
    assert {e.id: e.type for e in folded.entities.values() if "=" in e.type} == {
        "T2": "StatusTime=none", "T8": "TypeLiving=with_family", "T9": "StatusTime=current"}
    assert folded.entities["T6"].type == "StatusEmploy"
    assert folded.relations == mapped.relations and not folded.attributes


# ---------------------------------------------------------------- real corpora

CORPORA = {
    "maccrobat-med": "maccrobat2020", "ddi": "ddi-corpus-2013-brat", "sdoh-mtsamples": "social-history-mtsamples"}
SAMPLE = {"maccrobat-med": "18236639.txt", "ddi": "Train/DrugBank/Bupropion_ddi.txt",
          "sdoh-mtsamples": "train/146_Consult-HistoryandPhy.-Diplopia_8.txt"}


def _check_mapped(schema: TaskSchema, mapped: Document) -> None:
    """Schema types only, relation arguments present and of the relation's shape (compares ids, not text)."""
    types = {e.id: e.type for e in mapped.entities.values()}
    assert set(types.values()) <= set(schema.concept_names)
    assert not (mapped.events or mapped.normalizations or mapped.notes or mapped.equivalences)
    for r in mapped.relations.values():
        assert r.arg1 in types and r.arg2 in types
        assert schema.relation(r.type).fits(types[r.arg1], types[r.arg2])
    for a in mapped.attributes.values():
        assert a.value in schema.concept(types[a.target]).labels


@pytest.fixture(scope="module")
def mapped_corpora(shared_data: Path) -> dict[str, tuple[TaskSchema, list[Document]]]:
    out = {}
    for name, folder in CORPORA.items():
        schema = load_schema(name)
        corpus = read_corpus(shared_data / folder, collect_problems=True)
        out[name] = schema, [schema.map_document(doc) for doc in corpus.documents]
    return out


@pytest.mark.parametrize("name", CORPORA)
def test_map_real_document(shared_data, tmp_path, name):
    path = shared_data / CORPORA[name] / SAMPLE[name]
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    schema = load_schema(name)
    mapped = schema.map_document(read_document(path))
    _check_mapped(schema, mapped)
    assert len({r.type for r in mapped.relations.values()}) >= 3
    mapped.doc_id = "mapped"
    back = read_document(write_document(mapped, tmp_path, write_text=True).with_suffix(".txt"))
    assert (back.entities, back.relations, back.attributes) == (mapped.entities, mapped.relations, mapped.attributes)


@pytest.mark.parametrize("name", CORPORA)
def test_whole_corpus_maps_onto_every_type(mapped_corpora, name):
    schema, docs = mapped_corpora[name]
    for mapped in docs:
        _check_mapped(schema, mapped)
    concepts = Counter(e.type for d in docs for e in d.entities.values())
    relations = Counter(r.type for d in docs for r in d.relations.values())
    assert set(concepts) == set(schema.concept_names)
    assert set(relations) == set(schema.relation_names)


def test_corpus_counts_match_the_source_annotations(mapped_corpora):
    # Counted in the .ann files: MACCROBAT MODIFY Dosage->Medication 354 (one repeats another link),
    # Administration->Medication 179, CAUSE Medication->Sign_symptom/Disease_disorder 13 + 7;
    # DDI 4,673 relations; MTSamples StatusTimeVal current 498 / none 319 / past 137 / future 2.
    count = {name: Counter(r.type for d in docs for r in d.relations.values())
             for name, (_, docs) in mapped_corpora.items()}
    assert (count["maccrobat-med"]["Dosage-Drug"], count["maccrobat-med"]["Route-Drug"]) == (353, 179)
    assert count["maccrobat-med"]["Drug-Effect"] == 20
    assert sum(count["ddi"].values()) == 4673
    labels = Counter(a.value for d in mapped_corpora["sdoh-mtsamples"][1] for a in d.attributes.values())
    assert labels == {"current": 498, "none": 319, "past": 137, "future": 2}


def test_a_schema_without_a_mapping_takes_the_types_of_its_own_names() -> None:
    data = {"name": "same-names", "concepts": [{"name": "Drug", "query": "q"}, {"name": "Dose", "query": "q"}],
            "relations": [{"name": "Dose-Drug", "head": "Drug", "tails": ["Dose"], "query": "q {head}"}]}
    text = "Aspirin 81 mg daily."
    doc = Document("d", text, entities={"T1": Entity("T1", "Drug", ((0, 7),), "Aspirin"),
                                        "T2": Entity("T2", "Dose", ((8, 13),), "81 mg"),
                                        "T3": Entity("T3", "Frequency", ((14, 19),), "daily")},
                   relations={"R1": Relation("R1", "Dose-Drug", "T1", "T2")})
    mapped = TaskSchema.from_dict(data).map_document(doc)
    assert sorted(e.type for e in mapped.entities.values()) == ["Dose", "Drug"]
    assert [r.type for r in mapped.relations.values()] == ["Dose-Drug"]
    explicit = TaskSchema.from_dict({**data, "mapping": {}})  # an empty mapping drops everything, as written
    assert not explicit.map_document(doc).entities
    assert TaskSchema.from_dict(explicit.to_dict()).mapping == explicit.mapping
