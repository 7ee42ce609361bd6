"""The corpus layer: sentences and windows with char offsets, token alignment, model examples, sampling."""
from clinical_prompt.corpus.alignment import (
    TokenizedText,
    bio_tags,
    decode_bio,
    decode_start_end,
    token_span_to_char_span,
    tokenize_text,
)
from clinical_prompt.corpus.examples import (
    BioRow,
    ConceptRow,
    RelationRow,
    bio_label_names,
    build_bio_examples,
    build_concept_examples,
    build_relation_examples,
    is_relation_row,
    to_dataset,
)
from clinical_prompt.corpus.report import TypeAlignment, alignment_report, format_alignment_report
from clinical_prompt.corpus.sampling import sample_documents, sample_sentences, train_dev_split
from clinical_prompt.corpus.sentences import sentence_documents, split_sentences
from clinical_prompt.corpus.splits import hold_out, load_split, read_mapped
from clinical_prompt.corpus.windows import Window, document_units, pack_windows, sentence_units, window_around

__all__ = [
    "BioRow",
    "ConceptRow",
    "RelationRow",
    "TokenizedText",
    "TypeAlignment",
    "Window",
    "alignment_report",
    "bio_label_names",
    "bio_tags",
    "build_bio_examples",
    "build_concept_examples",
    "build_relation_examples",
    "decode_bio",
    "decode_start_end",
    "document_units",
    "format_alignment_report",
    "hold_out",
    "is_relation_row",
    "load_split",
    "pack_windows",
    "read_mapped",
    "sample_documents",
    "sample_sentences",
    "sentence_documents",
    "sentence_units",
    "split_sentences",
    "to_dataset",
    "token_span_to_char_span",
    "tokenize_text",
    "train_dev_split",
    "window_around",
]
