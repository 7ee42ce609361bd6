"""Tests for clinical_prompt.corpus: sentences, windows, alignment, examples, sampling, alignment report."""
from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from clinical_prompt.brat import Document, Entity, Relation, read_corpus
from clinical_prompt.corpus import (
    bio_label_names,
    bio_tags,
    build_bio_examples,
    build_concept_examples,
    build_relation_examples,
    decode_bio,
    decode_start_end,
    format_alignment_report,
    sample_documents,
    sample_sentences,
    sentence_documents,
    sentence_units,
    split_sentences,
    to_dataset,
    token_span_to_char_span,
    tokenize_text,
    train_dev_split,
)
from clinical_prompt.corpus.alignment import snap_to_words
from clinical_prompt.corpus.report import STRUCTURAL_LOSSES, alignment_report
from clinical_prompt.corpus.windows import document_units, pack_windows, window_around
from clinical_prompt.schema import ConceptType, RelationType, TaskSchema, load_schema

SCHEMA = TaskSchema(
    "toy",
    concepts=(ConceptType("Drug", "Which drugs are named?"), ConceptType("Strength", "What strengths are given?")),
    relations=(RelationType("Strength-Drug", "Drug", ("Strength",), "What is the strength of {head}?", "Arg2"),),
)


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="module")
def bpe_tokenizer():
    """A tiny byte-level BPE tokenizer laid out as RoBERTa (no token type ids)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([_doc().text], trainer)
    backend.post_processor = processors.RobertaProcessing(
        ("</s>", backend.token_to_id("</s>")), ("<s>", backend.token_to_id("<s>"))
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        model_input_names=["input_ids", "attention_mask"],
    )


def _entity(text: str, key: str, label: str, word: str, nth: int = 0) -> Entity:
    start = -1
    for _ in range(nth + 1):
        start = text.index(word, start + 1)
    return Entity(key, label, ((start, start + len(word)),), word)


def _doc() -> Document:
    """Three sentences; the strength of metoprolol sits in the sentence after it."""
    text = "Patient took aspirin 10mg daily.\n\nNo rash was seen. Then metoprolol was started.\nDose 25 mg by mouth."
    entities = [
        _entity(text, "T1", "Drug", "aspirin"),
        _entity(text, "T2", "Strength", "10mg"),
        _entity(text, "T3", "Drug", "metoprolol"),
        _entity(text, "T4", "Strength", "25 mg"),
    ]
    relations = [Relation("R1", "Strength-Drug", "T2", "T1"), Relation("R2", "Strength-Drug", "T4", "T3")]
    return Document("doc", text, {e.id: e for e in entities}, {r.id: r for r in relations})


def _decoded(row: dict) -> set[tuple[int, int]]:
    return {token_span_to_char_span(row["offset_mapping"], first, last) for first, last in row["span_labels"]}


# --- sentences -------------------------------------------------------------------------------------------


def _sentence_texts(text: str, protected=()) -> list[str]:
    return [text[s:e] for s, e in split_sentences(text, protected)]


def test_split_sentences_rules():
    text = (
        "Seen by Dr. Smith today. Takes 2.5 mg b.i.d. Since May. Level was 3.5. He is well!  really\n"
        "MEDICATIONS:\n1. aspirin\n2. heparin\nthe dose was\nwrapped here.\n\nSOCIAL HISTORY\nNo smoking."
    )
    assert _sentence_texts(text) == [
        "Seen by Dr. Smith today.",
        "Takes 2.5 mg b.i.d. Since May.",
        "Level was 3.5.",
        "He is well!  really",
        "MEDICATIONS:",
        "1. aspirin",
        "2. heparin\nthe dose was\nwrapped here.",
        "SOCIAL HISTORY",
        "No smoking.",
    ]


def test_split_sentences_offsets_cover_text_trimmed():
    text = "  First one.   Second one?\n\n\n Third.  "
    spans = split_sentences(text)
    assert [text[s:e] for s, e in spans] == ["First one.", "Second one?", "Third."]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def test_split_sentences_never_inside_protected_span():
    text = "Severe chest pain. Radiating to the arm. Resolved."
    protected = [(text.index("pain"), text.index("arm") + 3)]
    assert _sentence_texts(text, protected) == ["Severe chest pain. Radiating to the arm.", "Resolved."]


def test_sentence_documents_shift_entities_and_keep_inner_relations():
    doc = _doc()
    parts = sentence_documents(doc)
    assert [p.doc_id for p in parts] == ["doc@0", "doc@34", "doc@52", "doc@81"]
    first, third, fourth = parts[0], parts[2], parts[3]
    assert {e.id: first.text[e.start : e.end] for e in first.entities.values()} == {"T1": "aspirin", "T2": "10mg"}
    assert list(first.relations) == ["R1"]
    assert list(third.entities) == ["T3"] and list(fourth.entities) == ["T4"]
    assert not third.relations and not fourth.relations  # R2 crosses sentences


# --- alignment -------------------------------------------------------------------------------------------


def test_tokenize_text_offsets_split_words(tokenizer):
    text = "took 10mg daily"
    tokens = tokenize_text(text, tokenizer)
    assert [text[s:e] for s, e in tokens.offsets] == ["took", "10", "mg", "daily"]
    assert tokens.boundary_problem(5, 7) is None  # "10"
    assert tokens.boundary_problem(7, 9) is None  # "mg": a word piece
    assert tokens.boundary_problem(7, 8) == "boundary_inside_token"
    assert tokens.boundary_problem(0, 5) == "boundary_between_tokens"  # trailing space
    assert tokens.boundary_problem(4, 5) == "no_tokens"
    assert tokens.overlapping(6, 8) == (1, 2)


def test_bio_tags_overlap_and_decode():
    tags = bio_tags(6, [(3, 4, "B"), (0, 2, "A"), (1, 1, "C"), (0, 0, "D")])
    assert tags == ["B-A", "I-A", "I-A", "B-B", "I-B", "O"]  # earlier start wins, then the longer span
    assert decode_bio(tags) == [(0, 2, "A"), (3, 4, "B")]
    assert decode_bio(["O", "I-X", "I-X", "I-Y", "B-X", "B-X"]) == [(1, 2, "X"), (3, 3, "Y"), (4, 4, "X"), (5, 5, "X")]


def test_decode_start_end_flat_and_matched():
    starts, ends = [0, 1, 0, 1, 0], [0, 0, 1, 0, 1]
    assert decode_start_end(starts, ends) == [(1, 2), (3, 4)]
    assert decode_start_end(starts, ends, match={(1, 4), (3, 4)}) == [(1, 4), (3, 4)]


# --- windows ---------------------------------------------------------------------------------------------


def test_windows_pack_sentences_within_budget(tokenizer):
    doc = _doc()
    tokens = tokenize_text(doc.text, tokenizer)
    units = document_units(doc, tokens, 64)
    assert [doc.text[u.start : u.end] for u in units] == [doc.text[s:e] for s, e in split_sentences(doc.text)]
    for budget in (7, 12, 20, 64):
        windows = pack_windows(document_units(doc, tokens, budget), budget)
        assert all(w.num_tokens <= budget for w in windows)
        assert windows[0].token_start == 0 and windows[-1].token_end == len(tokens.offsets)
        assert all(a.token_end == b.token_start and a.end < b.start for a, b in zip(windows, windows[1:]))
        for entity in doc.entities.values():
            assert sum(w.contains(entity.start, entity.end) for w in windows) == 1
    assert len(pack_windows(units, 64)) == 1


def test_long_sentence_cut_outside_entities_preferring_spaces(tokenizer):
    text = "one two three four five six seven eight nine ten"
    tokens = tokenize_text(text, tokenizer)
    protected = [(text.index("three"), text.index("six") + 3)]
    units = sentence_units(tokens, [(0, len(text))], 5, protected)
    assert [text[u.start : u.end] for u in units] == ["one two", "three four five six seven", "eight nine ten"]
    glued = "aa-bb-cc-dd"  # no whitespace: cut between word pieces
    pieces = sentence_units(tokenize_text(glued, tokenizer), [(0, len(glued))], 4)
    assert [glued[u.start : u.end] for u in pieces] == ["aa-bb-", "cc-dd"]


def test_window_around_takes_neighbours_within_budget(tokenizer):
    doc = _doc()
    units = document_units(doc, tokenize_text(doc.text, tokenizer), 64)
    middle = window_around(units, 2, 64, 1)
    assert (middle.start, middle.end) == (units[1].start, units[3].end)
    assert window_around(units, 2, 64, 0) == units[2]
    assert units[1].num_tokens < units[3].num_tokens
    tight = window_around(units, 2, units[2].num_tokens + units[3].num_tokens, 1)  # the left one fits first
    assert (tight.start, tight.end) == (units[1].start, units[2].end)


# --- examples --------------------------------------------------------------------------------------------


def test_concept_examples_hard_prompt(tokenizer):
    doc = _doc()
    rows = build_concept_examples([doc], tokenizer, SCHEMA, max_length=64)
    assert [(r["type"], r["prompt_id"]) for r in rows] == [("Drug", 0), ("Strength", 1)]
    drug, strength = rows
    query = tokenizer("Which drugs are named?", add_special_tokens=False)["input_ids"]
    assert drug["input_ids"][: len(query) + 2] == [tokenizer.cls_token_id, *query, tokenizer.sep_token_id]
    assert drug["token_type_ids"][len(query) + 2] == 1 and drug["token_type_ids"][1] == 0
    assert all(label == -100 for label in drug["start_labels"][: len(query) + 2])
    assert drug["start_labels"][-1] == -100 and drug["offset_mapping"][-1] == (0, 0)
    assert _decoded(drug) == {(13, 20), (57, 67)}
    assert {doc.text[s:e] for s, e in _decoded(strength)} == {"10mg", "25 mg"}
    assert drug["start_labels"].count(1) == drug["end_labels"].count(1) == 2
    assert len(drug["input_ids"]) == len(drug["attention_mask"]) == len(drug["offset_mapping"]) <= 64


def test_concept_examples_soft_prompt_and_windows(tokenizer):
    doc = _doc()
    rows = build_concept_examples([doc], tokenizer, SCHEMA, max_length=24, prompt="soft", num_virtual_tokens=8)
    assert all(len(r["input_ids"]) <= 24 - 8 for r in rows)
    assert all(
        r["input_ids"][0] == tokenizer.cls_token_id and r["token_type_ids"] == [0] * len(r["input_ids"]) for r in rows
    )
    assert len({r["example_id"] for r in rows}) == len(rows) > 2
    found = {(r["type"], doc.text[s:e]) for r in rows for s, e in _decoded(r)}
    assert found == {("Drug", "aspirin"), ("Drug", "metoprolol"), ("Strength", "10mg"), ("Strength", "25 mg")}
    for row in rows:
        context = [(s, e) for s, e in row["offset_mapping"] if e > s]
        assert row["window_start"] == context[0][0] and row["window_end"] >= context[-1][1]


def test_relation_examples_hard_prompt_cross_sentence(tokenizer):
    doc = _doc()
    rows = build_relation_examples([doc], tokenizer, SCHEMA, max_length=64)
    assert [(r["head_id"], r["type"], r["prompt_id"]) for r in rows] == [
        ("T1", "Strength-Drug", 2), ("T3", "Strength-Drug", 2)]
    aspirin, metoprolol = rows
    sep = aspirin["input_ids"].index(tokenizer.sep_token_id)
    query = tokenizer.convert_ids_to_tokens(aspirin["input_ids"][1:sep])
    assert query == tokenizer.tokenize("What is the strength of aspirin?")
    assert {doc.text[s:e] for s, e in _decoded(aspirin)} == {"10mg"}
    assert {doc.text[s:e] for s, e in _decoded(metoprolol)} == {"25 mg"}  # tail in the next sentence
    alone = build_relation_examples([doc], tokenizer, SCHEMA, max_length=64, neighbours=0)
    assert not alone[1]["span_labels"]


def test_relation_examples_soft_markers(tokenizer):
    doc = _doc()
    rows = build_relation_examples([doc], tokenizer, SCHEMA, max_length=64, prompt="soft", markers=("<", ">"))
    row = rows[1]
    tokens = tokenizer.convert_ids_to_tokens(row["input_ids"])
    opening, closing = tokens.index("<"), tokens.index(">")
    assert tokenizer.convert_tokens_to_string(tokens[opening + 1 : closing]) == "metoprolol"
    assert row["offset_mapping"][opening] == (0, 0) and row["start_labels"][opening] == -100
    assert {doc.text[s:e] for s, e in _decoded(row)} == {"25 mg"}
    assert row["prompt_id"] == 2 and tokens[0] == "[CLS]" and "what" not in tokens


def test_relation_examples_soft_segment(tokenizer, bpe_tokenizer):
    doc = _doc()
    row = build_relation_examples([doc], tokenizer, SCHEMA, max_length=64, prompt="soft", head_marking="segment")[0]
    flagged = [span for span, t in zip(row["offset_mapping"], row["token_type_ids"]) if t == 1]
    assert (flagged[0][0], flagged[-1][1]) == (13, 20)
    assert {doc.text[s:e] for s, e in _decoded(row)} == {"10mg"}
    with pytest.raises(ValueError, match="token_type_ids"):
        build_relation_examples([doc], bpe_tokenizer, SCHEMA, prompt="soft", head_marking="segment")


def test_bio_examples_round_trip(tokenizer):
    doc = _doc()
    names = bio_label_names(SCHEMA.concept_names)
    assert names == ["O", "B-Drug", "I-Drug", "B-Strength", "I-Strength"]
    rows = build_bio_examples([doc], tokenizer, SCHEMA.concept_names, max_length=20)
    assert len(rows) > 1 and all(len(r["labels"]) == len(r["input_ids"]) <= 20 for r in rows)
    assert all(r["labels"][0] == r["labels"][-1] == -100 for r in rows)
    found = {
        (label, doc.text[slice(*token_span_to_char_span(r["offset_mapping"], first, last))])
        for r in rows
        for first, last, label in decode_bio([names[i] if i >= 0 else "O" for i in r["labels"]])
    }
    assert found == {("Drug", "aspirin"), ("Drug", "metoprolol"), ("Strength", "10mg"), ("Strength", "25 mg")}


def test_to_dataset_columns(tokenizer, bpe_tokenizer):
    rows = build_concept_examples([_doc()], tokenizer, SCHEMA, max_length=64)
    dataset = to_dataset(rows)
    assert len(dataset) == 2
    assert {"example_id", "doc_id", "window_start", "input_ids", "token_type_ids", "offset_mapping", "start_labels",
            "end_labels", "span_labels"} <= set(dataset.column_names)
    assert dataset[0]["span_labels"] == [list(s) for s in rows[0]["span_labels"]]
    bpe_rows = build_concept_examples([_doc()], bpe_tokenizer, SCHEMA, max_length=64)
    assert "token_type_ids" not in to_dataset(bpe_rows).column_names


def test_any_fast_tokenizer_layout(bpe_tokenizer):
    doc = _doc()
    row = build_concept_examples([doc], bpe_tokenizer, SCHEMA, max_length=64)[0]
    tokens = bpe_tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert tokens[0] == "<s>" and tokens[-1] == "</s>" and tokens.count("</s>") == 3
    assert {doc.text[s:e] for s, e in _decoded(row)} == {"aspirin", "metoprolol"}
    stats = alignment_report([doc], bpe_tokenizer, max_length=64, schema=SCHEMA)
    assert all(item.recovered["mrc"] == item.total for item in stats.values())


# --- alignment report ------------------------------------------------------------------------------------


def test_alignment_report_classifies_every_loss(tokenizer):
    text = ("Gave aspirin 10mg daily.\nFever and chills resolved after heparin and rest.\n"
            "Span of many words that is far too long.")
    heparin, rest = text.index("heparin"), text.index("rest")
    entities = [
        _entity(text, "T1", "Drug", "aspirin"),
        _entity(text, "T2", "Drug", "asp"),  # boundary inside a word
        _entity(text, "T3", "Strength", "10"),  # a word piece: recovered
        _entity(text, "T4", "Status", "resolved "),  # trailing space
        Entity("T5", "Drug", ((heparin, heparin + 7), (rest, rest + 4))),
        _entity(text, "T6", "Sign", "Fever and chills"),
        _entity(text, "T7", "Sign", "Fever"),  # inside T6
        _entity(text, "T8", "Span", "Span of many words that is far too long"),  # longer than a window
    ]
    doc = Document("d", text, {e.id: e for e in entities})
    stats = alignment_report([doc], tokenizer, max_length=10)
    for scheme in ("bio", "mrc"):
        assert stats["Drug"].losses[scheme] == {"boundary_inside_token": 1, "discontinuous": 1}
        assert stats["Status"].losses[scheme] == {"boundary_between_tokens": 1}
        assert stats["Span"].losses[scheme] == {"outside_window": 1}
    assert stats["Drug"].recovered == stats["Strength"].recovered == {"bio": 1, "mrc": 1}
    assert stats["Sign"].recovered == {"bio": 1, "mrc": 2} and stats["Sign"].losses["bio"] == {"overlap": 1}
    assert stats["Sign"].fraction("bio") == 0.5 and stats["Drug"].fraction("mrc") == 1.0
    assert sum(item.spurious.total() for item in stats.values()) == 0
    table = format_alignment_report(stats)
    assert "Sign" in table and "total" in table and "aspirin" not in table and "Fever" not in table


# --- sampling --------------------------------------------------------------------------------------------


def _corpus(n: int) -> list[Document]:
    return [Document(f"d{i:02d}", f"Note {i}. Second line {i}.") for i in range(n)]


def _ids(sample: list[Document]) -> list[str]:
    return [d.doc_id for d in sample]


def test_sample_documents_seeded_nested_order_free():
    docs = _corpus(30)
    assert _ids(sample_documents(docs, 10, seed=3)) == _ids(sample_documents(list(reversed(docs)), 10, seed=3))
    assert _ids(sample_documents(docs, 20, seed=3))[:10] == _ids(sample_documents(docs, 10, seed=3))
    assert _ids(sample_documents(docs, 10, seed=3)) != _ids(sample_documents(docs, 10, seed=4))
    with pytest.raises(ValueError):
        sample_documents(docs, 31)


def test_sample_sentences_nested_and_annotated_only():
    docs = _corpus(5) + [_doc()]
    small, large = sample_sentences(docs, 4, seed=1), sample_sentences(docs, 8, seed=1)
    assert _ids(large[:4]) == _ids(small)
    annotated = sample_sentences(docs, 3, seed=0, annotated_only=True)
    assert len(annotated) == 3 and all(d.entities for d in annotated)
    with pytest.raises(ValueError):
        sample_sentences(docs, 5, annotated_only=True)


def test_train_dev_split():
    docs = _corpus(20)
    train, dev = train_dev_split(docs, 0.25, seed=7)
    assert len(dev) == 5 and len(train) == 15
    assert sorted(d.doc_id for d in train + dev) == [d.doc_id for d in docs]
    assert train_dev_split(list(reversed(docs)), 0.25, seed=7) == (train, dev)
    assert train_dev_split(docs, 0.25, seed=8)[1] != dev


# --- real corpora ----------------------------------------------------------------------------------------

REAL = [
    ("maccrobat2020", "maccrobat-med"),
    ("ddi-corpus-2013-brat", "ddi"),
    ("social-history-mtsamples", "sdoh-mtsamples"),
]
_MAPPED: dict[str, list[Document]] = {}


def _mapped(shared_data, folder: str, schema_name: str) -> tuple[list[Document], TaskSchema]:
    schema = load_schema(schema_name)
    if folder not in _MAPPED:
        corpus = read_corpus(shared_data / folder, collect_problems=True)
        _MAPPED[folder] = [schema.map_document(doc) for doc in corpus.documents]
    return _MAPPED[folder], schema


@pytest.mark.slow
@pytest.mark.parametrize(("folder", "schema_name"), REAL)
def test_real_corpus_alignment(shared_data, tokenizer, folder, schema_name):
    docs, schema = _mapped(shared_data, folder, schema_name)
    stats = alignment_report(docs, tokenizer, max_length=512, schema=schema)
    print(f"\n{folder} / {schema_name}\n{format_alignment_report(stats)}")
    assert sum(item.total for item in stats.values()) > 1000
    for name, item in stats.items():
        for scheme in ("bio", "mrc"):
            assert item.losses[scheme]["unexplained"] == 0, (name, scheme)
            assert item.spurious[scheme] == 0, (name, scheme)
        assert item.recovered["mrc"] == item.eligible("mrc"), name
        assert item.recovered["bio"] == item.eligible("bio") - item.losses["bio"]["overlap"], name
        assert set(item.losses["mrc"]) <= set(STRUCTURAL_LOSSES)


@pytest.mark.slow
@pytest.mark.parametrize(("folder", "schema_name"), REAL)
def test_real_corpus_relation_examples(shared_data, tokenizer, folder, schema_name):
    docs, schema = _mapped(shared_data, folder, schema_name)
    docs = docs[:150]
    rows = build_relation_examples(docs, tokenizer, schema, max_length=512)
    assert all(len(r["input_ids"]) <= 512 for r in rows)
    by_doc = {doc.doc_id: doc for doc in docs}
    tokens = {doc.doc_id: tokenize_text(doc.text, tokenizer) for doc in docs}
    labelled = 0
    for row in rows:
        doc = by_doc[row["doc_id"]]
        rtype = schema.relation(row["type"])
        tails = {
            (doc.entities[tail].start, doc.entities[tail].end)
            for r in doc.relations.values()
            if r.type == rtype.name
            for head, tail in [(r.arg1, r.arg2) if rtype.head_arg == "Arg1" else (r.arg2, r.arg1)]
            if head == row["head_id"] and len(doc.entities[tail].spans) == 1
        }
        decoded = _decoded(row)
        in_window = {t for t in tails if row["window_start"] <= t[0] and t[1] <= row["window_end"]}
        exact = {t for t in in_window if tokens[doc.doc_id].boundary_problem(*t) is None}
        assert exact <= decoded
        labelled += len(decoded)
    relations = sum(len(doc.relations) for doc in docs)
    print(f"\n{folder}: {labelled} of {relations} relation tails labelled in {len(rows)} examples")
    assert labelled >= 0.97 * relations


@pytest.mark.parametrize(("start", "end", "expected"), [
    (8, 11, "warfarin"),       # a tagged first piece
    (11, 16, "warfarin"),      # a tagged last piece
    (8, 16, "warfarin"),       # already whole
    (21, 25, "10mg"),          # digits and letters are one word
    (30, 33, "beta"),          # a hyphen ends a word
])
def test_spans_snap_to_whole_words(start: int, end: int, expected: str) -> None:
    text = "Stopped warfarin and 10mg of beta-blockers."
    snapped = snap_to_words(text, start, end)
    assert text[slice(*snapped)] == expected
