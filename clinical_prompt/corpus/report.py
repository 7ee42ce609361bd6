"""Alignment check: gold concepts -> token labels (BIO and MRC start/end) -> decoded char spans -> gold.

Every gold concept is either recovered exactly or its loss is put in the first category that applies:

* ``discontinuous``: several fragments; labels use the outer bounds, decoding gives one contiguous span;
* ``no_tokens``: the span holds no token (whitespace or characters the tokenizer drops);
* ``boundary_inside_token``: a boundary falls strictly inside a token (e.g. ``mg`` of ``10mg`` with a
  tokenizer that keeps ``10mg`` whole); the label snaps outward to whole tokens;
* ``boundary_between_tokens``: a boundary falls on whitespace or dropped characters next to the tokens;
* ``outside_window``: no window holds the whole span (an entity longer than the token budget);
* ``overlap`` (BIO only): overlaps another gold concept, which BIO tags cannot both carry;
* ``unexplained``: none of the above, which would be a bug.

Concepts with none of the first five problems are *eligible*; MRC must recover all of them, BIO all but
``overlap``. ``spurious`` counts decoded spans that no gold label produced (also a bug).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from clinical_prompt.brat import Document, Entity
from clinical_prompt.corpus.alignment import decode_bio, decode_start_end, token_span_to_char_span, tokenize_text
from clinical_prompt.corpus.examples import bio_label_names, build_bio_examples, build_concept_examples
from clinical_prompt.schema import ConceptType, TaskSchema

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SCHEMES = ("bio", "mrc")
STRUCTURAL_LOSSES = ("discontinuous", "no_tokens", "boundary_inside_token", "boundary_between_tokens", "outside_window")


@dataclass
class TypeAlignment:
    """Alignment figures of one concept type, per labelling scheme (``"bio"``, ``"mrc"``)."""

    total: int = 0
    recovered: Counter[str] = field(default_factory=Counter)
    losses: dict[str, Counter[str]] = field(default_factory=lambda: {s: Counter() for s in SCHEMES})
    spurious: Counter[str] = field(default_factory=Counter)

    def eligible(self, scheme: str) -> int:
        """Gold concepts that are contiguous, inside one window and on token boundaries."""
        return self.total - sum(self.losses[scheme][c] for c in STRUCTURAL_LOSSES)

    def fraction(self, scheme: str) -> float:
        """Recovered share of the eligible concepts (1.0 when none is eligible)."""
        eligible = self.eligible(scheme)
        return self.recovered[scheme] / eligible if eligible else 1.0


def _decoded_bio(rows: list[dict], names: list[str]) -> dict[tuple[str, str], set]:
    decoded = defaultdict(set)
    for row in rows:
        tags = [names[label] if label >= 0 else "O" for label in row["labels"]]
        for first, last, label in decode_bio(tags):
            decoded[row["doc_id"], label].add(token_span_to_char_span(row["offset_mapping"], first, last))
    return decoded


def _decoded_mrc(rows: list[dict]) -> dict[tuple[str, str], set]:
    decoded = defaultdict(set)
    for row in rows:
        match = {tuple(span) for span in row["span_labels"]}
        for first, last in decode_start_end(row["start_labels"], row["end_labels"], match):
            decoded[row["doc_id"], row["type"]].add(token_span_to_char_span(row["offset_mapping"], first, last))
    return decoded


def _overlaps(entity: Entity, others: Iterable[Entity]) -> bool:
    return any(o.id != entity.id and o.start < entity.end and entity.start < o.end for o in others)


def alignment_report(
    documents: Iterable[Document],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int = 512,
    schema: TaskSchema | None = None,
) -> dict[str, TypeAlignment]:
    """Per concept type: how many gold concepts survive labelling and decoding, and why the others do not.

    With ``schema``, MRC examples use its hard-prompt queries (their length shrinks the windows);
    without, the concept types found in ``documents`` are used with soft-prompt layout.
    """
    documents = list(documents)
    prompt = "hard"
    if schema is None:
        names = sorted({e.type for doc in documents for e in doc.entities.values()})
        schema, prompt = TaskSchema("alignment", tuple(ConceptType(n, "") for n in names)), "soft"
    bio_names = bio_label_names(schema.concept_names)
    rows = {
        "bio": build_bio_examples(documents, tokenizer, schema.concept_names, max_length=max_length),
        "mrc": build_concept_examples(documents, tokenizer, schema, max_length=max_length, prompt=prompt),
    }
    decoded = {"bio": _decoded_bio(rows["bio"], bio_names), "mrc": _decoded_mrc(rows["mrc"])}
    windows = {s: defaultdict(list) for s in SCHEMES}
    for scheme in SCHEMES:
        for row in rows[scheme]:
            windows[scheme][row["doc_id"]].append((row["window_start"], row["window_end"]))
    stats = {name: TypeAlignment() for name in schema.concept_names}
    for doc in documents:
        tokens = tokenize_text(doc.text, tokenizer)
        gold = [e for e in doc.entities.values() if e.type in stats]
        expected = defaultdict(set)
        for entity in gold:
            span = tokens.overlapping(entity.start, entity.end)
            if span is not None:
                expected[entity.type].add(token_span_to_char_span(tokens.offsets, *span))
        for entity in gold:
            stats[entity.type].total += 1
            problem = tokens.boundary_problem(entity.start, entity.end)
            for scheme in SCHEMES:
                found = decoded[scheme][doc.doc_id, entity.type]
                if len(entity.spans) == 1 and (entity.start, entity.end) in found:
                    stats[entity.type].recovered[scheme] += 1
                    continue
                if len(entity.spans) > 1:
                    category = "discontinuous"
                elif problem is not None:
                    category = problem
                elif not any(s <= entity.start and entity.end <= e for s, e in windows[scheme][doc.doc_id]):
                    category = "outside_window"
                elif scheme == "bio" and _overlaps(entity, gold):
                    category = "overlap"
                else:
                    category = "unexplained"
                stats[entity.type].losses[scheme][category] += 1
        for name in stats:
            for scheme in SCHEMES:
                stats[name].spurious[scheme] += len(decoded[scheme][doc.doc_id, name] - expected[name])
    return stats


def _losses(counter: Counter[str]) -> str:
    return ", ".join(f"{category} {count}" for category, count in sorted(counter.items())) or "-"


def format_alignment_report(stats: dict[str, TypeAlignment]) -> str:
    """A plain-text table of :func:`alignment_report` figures, one row per type and a total row."""
    total = TypeAlignment()
    for item in stats.values():
        total.total += item.total
        total.recovered.update(item.recovered)
        total.spurious.update(item.spurious)
        for scheme in SCHEMES:
            total.losses[scheme].update(item.losses[scheme])
    header = ("type", "gold", "BIO recovered/eligible", "MRC recovered/eligible", "BIO losses", "MRC losses")
    lines = [header]
    for name, item in [*stats.items(), ("total", total)]:
        cells = [name, str(item.total)]
        for scheme in SCHEMES:
            cells.append(f"{item.recovered[scheme]}/{item.eligible(scheme)} ({100 * item.fraction(scheme):.1f}%)")
        cells += [_losses(item.losses[s] + Counter({"spurious": item.spurious[s]})) for s in SCHEMES]
        lines.append(tuple(cells))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)
