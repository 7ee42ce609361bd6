"""ADE-Corpus-V2 (Gurulingappa et al. 2012): PubMed case-report sentences with drugs, adverse effects and doses.

Files of the folder: ``DRUG-AE.rel`` and ``DRUG-DOSE.rel`` (``PMID|sentence|mention|begin|end|drug|begin|end``,
offsets into the whole abstract) and ``ADE-NEG.txt`` (``PMID NEG sentence``, sentences with no adverse effect).
Each distinct sentence becomes a Document ``{PMID}-{n}`` (``n`` counts that PMID's sentences in file order,
``.rel`` files first) with entities ``Drug``, ``Effect`` and ``Dose`` and relations ``Drug-Effect`` and
``Drug-Dose`` (``Arg1`` the effect or dose, ``Arg2`` the drug). The abstract offsets only fix the distance between
the two mentions: where a mention occurs more than once in its sentence, the pair of occurrences at that distance
is taken.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from clinical_prompt.brat import BratFormatError, Document, Entity, Relation

RELATION_FILES = {"DRUG-AE.rel": ("Effect", "Drug-Effect"), "DRUG-DOSE.rel": ("Dose", "Drug-Dose")}
NEGATIVE_FILE = "ADE-NEG.txt"


@dataclass
class _Sentence:
    pmid: str
    text: str
    entities: dict[tuple[str, int, int], str] = field(default_factory=dict)
    relations: set[tuple[str, str, str]] = field(default_factory=set)

    def entity(self, type_name: str, start: int, end: int) -> str:
        return self.entities.setdefault((type_name, start, end), f"T{len(self.entities) + 1}")

    def document(self, doc_id: str) -> Document:
        entities = {i: Entity(i, t, ((s, e),), self.text[s:e]) for (t, s, e), i in self.entities.items()}
        relations = {f"R{n}": Relation(f"R{n}", t, a1, a2)
                     for n, (t, a1, a2) in enumerate(sorted(self.relations, key=_relation_order), start=1)}
        return Document(doc_id, self.text, entities=entities, relations=relations)


def _relation_order(relation: tuple[str, str, str]) -> tuple[str, int, int]:
    return relation[0], int(relation[1][1:]), int(relation[2][1:])


def _occurrences(text: str, mention: str) -> list[int]:
    found, start = [], text.find(mention)
    while start >= 0:
        found.append(start)
        start = text.find(mention, start + 1)
    return found


def _locate(sentence: str, first: tuple[str, int], second: tuple[str, int]) -> tuple[int, int] | None:
    """Sentence offsets of two mentions given their abstract offsets: the occurrences whose distance matches."""
    a, b = _occurrences(sentence, first[0]), _occurrences(sentence, second[0])
    if not a or not b:
        return None
    distance = second[1] - first[1]
    return next(((x, y) for x in a for y in b if y - x == distance), (a[0], b[0]))


def _read_relations(path: Path, sentences: dict[tuple[str, str], _Sentence], mention_type: str, relation: str) -> None:
    with path.open(encoding="utf-8", newline="") as stream:
        for number, line in enumerate(stream, start=1):
            fields = line.rstrip("\r\n").split("|")
            if fields == [""]:
                continue
            if len(fields) != 8:
                raise BratFormatError(str(path), number, "malformed line", f"{len(fields)} fields, expected 8")
            pmid, text, mention, begin, _, drug, drug_begin, _ = fields
            try:
                located = _locate(text, (mention, int(begin)), (drug, int(drug_begin)))
            except ValueError:
                raise BratFormatError(str(path), number, "malformed line", "offsets are not integers") from None
            if located is None:
                raise BratFormatError(str(path), number, "mention not found in its sentence")
            sentence = sentences.setdefault((pmid, text), _Sentence(pmid, text))
            head = sentence.entity(mention_type, located[0], located[0] + len(mention))
            tail = sentence.entity("Drug", located[1], located[1] + len(drug))
            sentence.relations.add((relation, head, tail))


def _read_negatives(path: Path, sentences: dict[tuple[str, str], _Sentence]) -> None:
    with path.open(encoding="utf-8", newline="") as stream:
        for number, line in enumerate(stream, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            pmid, marker, text = (line.split(" ", 2) + ["", ""])[:3]
            if marker != "NEG" or not text:
                raise BratFormatError(str(path), number, "malformed line", "expected 'PMID NEG sentence'")
            sentences.setdefault((pmid, text), _Sentence(pmid, text))


def read_ade_corpus(directory: str | os.PathLike) -> list[Document]:
    """The sentences of an ADE-Corpus-V2 folder as Documents (see the module docstring); ``ADE-NEG.txt`` is
    optional."""
    root = Path(directory)
    if not (root / "DRUG-AE.rel").is_file():
        raise FileNotFoundError(f"{root}: no DRUG-AE.rel; expected the ADE-Corpus-V2 folder")
    sentences: dict[tuple[str, str], _Sentence] = {}
    for name, (mention_type, relation) in RELATION_FILES.items():
        if (root / name).is_file():
            _read_relations(root / name, sentences, mention_type, relation)
    if (root / NEGATIVE_FILE).is_file():
        _read_negatives(root / NEGATIVE_FILE, sentences)
    counts: dict[str, int] = {}
    documents = []
    for sentence in sentences.values():
        counts[sentence.pmid] = counts.get(sentence.pmid, 0) + 1
        documents.append(sentence.document(f"{sentence.pmid}-{counts[sentence.pmid]}"))
    return documents
