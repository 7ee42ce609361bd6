"""Task schemas: concept types, relation types, hard-prompt queries and the mapping from a BRAT corpus."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ConceptType:
    """A concept (entity) type and its natural-language MRC query."""

    name: str
    query: str


@dataclass(frozen=True)
class RelationType:
    """A relation type asked from its head concept: ``query`` holds ``{head}`` for the head mention.

    ``head_arg`` says which BRAT argument ("Arg1" or "Arg2") is the head in the corpus files.
    """

    name: str
    head: str
    tails: tuple[str, ...]
    query: str
    head_arg: str = "Arg1"


@dataclass(frozen=True)
class CorpusMapping:
    """How a BRAT corpus maps onto a schema (filled in by ``clinical_prompt.schema``)."""

    rename: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSchema:
    """Concept and relation types of one extraction task, with the mapping from its BRAT corpus."""

    name: str
    concepts: tuple[ConceptType, ...]
    relations: tuple[RelationType, ...] = ()
    mapping: CorpusMapping = field(default_factory=CorpusMapping)
