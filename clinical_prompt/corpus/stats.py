"""Corpus statistics and the alignment check behind ``clinical-prompt corpus stats|align``."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from clinical_prompt.brat import BratCorpus, Document, read_corpus
from clinical_prompt.corpus.sentences import entity_bounds, split_sentences
from clinical_prompt.schema import TaskSchema, load_schema


@dataclass
class CorpusStats:
    """Counts of one corpus: documents, sentences and annotations per type."""

    documents: int = 0
    sentences: int = 0
    characters: int = 0
    entities: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    relations: Counter[str] = field(default_factory=Counter)
    attributes: Counter[str] = field(default_factory=Counter)


def corpus_stats(documents: Iterable[Document]) -> CorpusStats:
    """Count documents, sentences, entities, events, relations (``*`` equivalences by type) and attributes."""
    stats = CorpusStats()
    for doc in documents:
        stats.documents += 1
        stats.characters += len(doc.text)
        stats.sentences += len(split_sentences(doc.text, entity_bounds(doc)))
        stats.entities.update(entity.type for entity in doc.entities.values())
        stats.events.update(event.type for event in doc.events.values())
        stats.relations.update(relation.type for relation in doc.relations.values())
        stats.relations.update(equivalence.type for equivalence in doc.equivalences)
        stats.attributes.update(attribute.name for attribute in doc.attributes.values())
    return stats


def _table(title: str, counts: Counter[str]) -> list[str]:
    if not counts:
        return [f"{title}: none"]
    width = max(len(name) for name in counts)
    lines = [f"{title}: {sum(counts.values()):,} in {len(counts)} types"]
    lines += [
        f"  {name:<{width}}  {count:>8,}" for name, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return lines


def format_stats(stats: CorpusStats, heading: str) -> str:
    """A plain-text report of ``stats``."""
    lines = [
        heading,
        f"documents: {stats.documents:,}   sentences: {stats.sentences:,}   characters: {stats.characters:,}",
        *_table("entities", stats.entities),
        *_table("events", stats.events),
        *_table("relations", stats.relations),
        *_table("attributes", stats.attributes),
    ]
    return "\n".join(lines)


def format_problems(corpus: BratCorpus, root: str | os.PathLike) -> str:
    """Every validation problem of ``corpus``, one per line: file, line, kind and detail."""
    lines = [f"problems: {len(corpus.problems)}"]
    for problem in corpus.problems:
        where = os.path.relpath(problem.path, root)
        where += f":{problem.line}" if problem.line is not None else ""
        lines.append(f"  {where}: {problem.kind}" + (f" ({problem.detail})" if problem.detail else ""))
    return "\n".join(lines)


def run_corpus_stats(directory: str | os.PathLike, schema_name: str | None = None) -> int:
    """Print the statistics of a BRAT corpus (and of its mapping onto a schema) and every problem found."""
    schema: TaskSchema | None = load_schema(schema_name) if schema_name else None
    corpus = read_corpus(directory, collect_problems=True)
    print(format_stats(corpus_stats(corpus.documents), f"BRAT corpus {directory}"))
    if schema is not None:
        mapped = [schema.map_document(doc) for doc in corpus.documents]
        print()
        print(format_stats(corpus_stats(mapped), f"mapped onto schema {schema.name}"))
    print()
    print(format_problems(corpus, directory))
    return 0


def run_alignment_check(
    directory: str | os.PathLike, schema_name: str, tokenizer_name: str | None = None, max_length: int = 512
) -> int:
    """Print, per concept type, the fraction of gold spans that survive token labelling and decoding."""
    from clinical_prompt.backbone import load_tokenizer
    from clinical_prompt.corpus.report import alignment_report, format_alignment_report

    schema = load_schema(schema_name)
    corpus = read_corpus(directory, collect_problems=True)
    documents = [schema.map_document(doc) for doc in corpus.documents]
    report = alignment_report(documents, load_tokenizer(tokenizer_name), max_length=max_length, schema=schema)
    print(format_alignment_report(report))
    return 0
