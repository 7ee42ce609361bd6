"""Task schemas: concept types, relation types, hard-prompt queries and the mapping from a BRAT corpus.

A schema is data: the built-ins live as YAML files in ``clinical_prompt/schemas/`` and custom ones load
from any YAML file with the same layout (see ``schemas/n2c2-2018.yaml``).

Mapping a BRAT document (``TaskSchema.map_document``):

* entity types (event triggers included) are renamed, merged or dropped by ``mapping.concepts``; a schema
  without a ``mapping`` section takes the corpus's entity and relation types of its own names;
* BRAT relations and event trigger-argument links become schema relations: the first candidate
  relation type whose head and tail types fit the mapped arguments wins, the others are dropped;
  an argument that is an event id stands for the event's trigger entity;
* attribute values become labels: a concept with ``labels`` keeps one span type (one MRC query)
  and carries its value as an ``Attribute`` on the mapped entity (the source attribute named in
  ``mapping.label_attributes``). ``fold_labels`` turns ``StatusTime`` + ``current`` into the entity
  type ``StatusTime=current``, so that plain span scoring also scores the values.
"""
from __future__ import annotations

import os
import string
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .atomic import write_text
from .brat import Attribute, Document, Relation
from .errors import ClinicalPromptError

SCHEMA_DIR = Path(__file__).with_name("schemas")
HEAD_ARGS = ("Arg1", "Arg2")
NOT_IN_SCHEMA = "type not in schema"
ARGUMENT_DROPPED = "argument not kept"
ARGUMENTS_DO_NOT_FIT = "argument types do not fit"
DUPLICATE = "duplicate"
DROP_REASONS = (NOT_IN_SCHEMA, ARGUMENT_DROPPED, ARGUMENTS_DO_NOT_FIT, DUPLICATE)


class SchemaError(ClinicalPromptError, ValueError):
    """An invalid schema; the message names the source file and the field."""

    def __init__(self, source: str, field_name: str, problem: str) -> None:
        self.source, self.field, self.problem = str(source), field_name, problem
        super().__init__(f"{self.source}: {field_name}: {problem}")


@dataclass(frozen=True)
class ConceptType:
    """A concept (entity) type and its natural-language MRC query; ``labels`` are its allowed values."""

    name: str
    query: str
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class RelationType:
    """A relation type asked from its head concept: ``query`` holds ``{head}`` for the head mention.

    ``head_arg`` says which BRAT argument ("Arg1" or "Arg2") is the head in the corpus files.
    ``head`` is the head concept; ``other_heads`` lists further head concepts (see ``heads``).
    """

    name: str
    head: str
    tails: tuple[str, ...]
    query: str
    head_arg: str = "Arg1"
    other_heads: tuple[str, ...] = ()

    @property
    def heads(self) -> tuple[str, ...]:
        """Every concept type that may be the head."""
        return (self.head, *self.other_heads)

    def fits(self, arg1_type: str, arg2_type: str) -> bool:
        """Whether a relation with these BRAT argument types (in file order) is of this type's shape."""
        head, tail = (arg1_type, arg2_type) if self.head_arg == "Arg1" else (arg2_type, arg1_type)
        return head in self.heads and tail in self.tails

    def format_query(self, head_text: str) -> str:
        """The query for one head mention."""
        return self.query.format(head=head_text)


@dataclass(frozen=True)
class CorpusMapping:
    """How a BRAT corpus maps onto a schema.

    ``concepts``: source entity type -> concept name (unlisted types are dropped; a schema file without a
    ``mapping`` section maps each concept and relation type from the source type of the same name).
    ``relations``: source relation type -> candidate schema relation names, first fitting wins.
    ``event_arguments``: candidate schema relation names for event trigger (Arg1) -> argument (Arg2).
    ``label_attributes``: concept name -> source attribute whose value is the concept's label.
    """

    concepts: dict[str, str] = field(default_factory=dict)
    relations: dict[str, tuple[str, ...]] = field(default_factory=dict)
    event_arguments: tuple[str, ...] = ()
    label_attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSchema:
    """Concept and relation types of one extraction task, with the mapping from its BRAT corpus."""

    name: str
    concepts: tuple[ConceptType, ...]
    relations: tuple[RelationType, ...] = ()
    mapping: CorpusMapping = field(default_factory=CorpusMapping)

    @property
    def concept_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.concepts)

    @property
    def relation_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.relations)

    def concept(self, name: str) -> ConceptType:
        """The concept type called ``name`` (KeyError when absent)."""
        return {c.name: c for c in self.concepts}[name]

    def relation(self, name: str) -> RelationType:
        """The relation type called ``name`` (KeyError when absent)."""
        return {r.name: r for r in self.relations}[name]

    def map_document(self, doc: Document) -> Document:
        """A new Document holding only schema concepts, schema relations and concept labels.

        Ids are kept; relations from event arguments get new ``R`` ids after the document's own.
        """
        return self.map_with_drops(doc)[0]

    def map_with_drops(self, doc: Document) -> tuple[Document, Counter[tuple[str, str]]]:
        """:meth:`map_document` and what it left out: ``(kind, reason)`` -> count, kind ``"concepts"``
        or ``"relations"``, reason one of :data:`DROP_REASONS` (attributes are not counted)."""
        m = self.mapping
        entities = {e.id: replace(e, type=m.concepts[e.type]) for e in doc.entities.values() if e.type in m.concepts}
        relation_types = {r.name: r for r in self.relations}
        concepts = {c.name: c for c in self.concepts}
        unmapped_relations = sum(r.type not in m.relations for r in doc.relations.values())
        dropped = Counter({("concepts", NOT_IN_SCHEMA): len(doc.entities) - len(entities),
                           ("relations", NOT_IN_SCHEMA): unmapped_relations})

        def resolve(ann_id: str) -> str | None:
            event = doc.events.get(ann_id)
            ann_id = event.trigger if event else ann_id
            return ann_id if ann_id in entities else None

        links = [(r.id, m.relations[r.type], r.arg1, r.arg2) for r in doc.relations.values() if r.type in m.relations]
        if m.event_arguments:
            links += [(None, m.event_arguments, e.trigger, arg) for e in doc.events.values() for _, arg in e.arguments]
        relations: dict[str, Relation] = {}
        seen: set[tuple[str, str, str]] = set()
        next_number = 1 + max((int(k[1:]) for k in doc.relations if k[1:].isdigit()), default=0)
        for rel_id, candidates, arg1, arg2 in links:
            a1, a2 = resolve(arg1), resolve(arg2)
            if a1 is None or a2 is None:
                dropped["relations", ARGUMENT_DROPPED] += 1
                continue
            types = (entities[a1].type, entities[a2].type)
            rtype = next((n for n in candidates if relation_types[n].fits(*types)), None)
            if rtype is None or (rtype, a1, a2) in seen:
                dropped["relations", DUPLICATE if rtype else ARGUMENTS_DO_NOT_FIT] += 1
                continue
            seen.add((rtype, a1, a2))
            if rel_id is None:
                rel_id, next_number = f"R{next_number}", next_number + 1
            relations[rel_id] = Relation(rel_id, rtype, a1, a2)

        attributes = {}
        for a in doc.attributes.values():
            target = resolve(a.target)
            concept = concepts[entities[target].type] if target else None
            if concept and m.label_attributes.get(concept.name) == a.name and a.value in concept.labels:
                attributes[a.id] = Attribute(a.id, a.name, target, a.value)
        mapped = Document(doc.doc_id, doc.text, entities=entities, relations=relations, attributes=attributes)
        return mapped, +dropped

    def to_dict(self) -> dict[str, Any]:
        """A JSON- and YAML-safe dict in the layout of the schema files; ``from_dict`` reads it back."""
        m = self.mapping
        concepts = [_drop_empty({"name": c.name, "query": c.query, "labels": list(c.labels)}) for c in self.concepts]
        relations = [
            {
                "name": r.name,
                "head": list(r.heads) if r.other_heads else r.head,
                "tails": list(r.tails),
                "query": r.query,
                "head_arg": r.head_arg,
            }
            for r in self.relations
        ]
        mapping = {
            "concepts": dict(m.concepts),
            "relations": {k: list(v) for k, v in m.relations.items()},
            "event_arguments": list(m.event_arguments),
            "label_attributes": dict(m.label_attributes),
        }
        return {"name": self.name, "concepts": concepts, "relations": relations, "mapping": _drop_empty(mapping)}

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> TaskSchema:
        """Build and validate a schema; raises ``SchemaError`` naming ``source`` and the field."""
        return _Parser(str(source)).schema(data)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the schema as YAML (atomically: temp file + rename)."""
        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))


def fold_labels(doc: Document) -> Document:
    """A copy of a mapped document whose labelled entities are typed ``<concept>=<label>``."""
    labels = {a.target: a.value for a in doc.attributes.values() if a.value is not None}
    entities = {k: replace(e, type=f"{e.type}={labels[k]}") if k in labels else e for k, e in doc.entities.items()}
    return Document(doc.doc_id, doc.text, entities=entities, relations=dict(doc.relations))


def builtin_schemas() -> list[str]:
    """Names of the schemas shipped with the package."""
    return sorted(p.stem for p in SCHEMA_DIR.glob("*.yaml"))


def load_schema(name_or_path: str | os.PathLike[str]) -> TaskSchema:
    """A built-in schema by name (e.g. ``"n2c2-2018"``) or a schema YAML file by path."""
    path = SCHEMA_DIR / f"{name_or_path}.yaml"
    if str(name_or_path) not in builtin_schemas():
        path = Path(name_or_path)
        if not path.is_file():
            raise SchemaError(str(name_or_path), "file", f"no such file or built-in schema {builtin_schemas()}")
    with path.open(encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark else "file"
            raise SchemaError(str(path), where, "not valid YAML") from None
    return TaskSchema.from_dict(data, source=str(path))


def _drop_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v}


@dataclass
class _Parser:
    """Validates a schema dict; every error names ``source`` and the field."""

    source: str

    def fail(self, where: str, problem: str) -> SchemaError:
        return SchemaError(self.source, where, problem)

    def table(self, value: Any, where: str, allowed: tuple[str, ...] | None = None, required: tuple[str, ...] = ()
              ) -> dict:
        """A mapping with name keys: only ``allowed`` ones (any when None) and all ``required`` ones."""
        if not isinstance(value, dict):
            raise self.fail(where or "schema", "expected a mapping")
        for key in value:
            if allowed is None:
                self.text(key, where)
            elif key not in allowed:
                raise self.fail(_join(where, str(key)), f"unknown key (allowed: {', '.join(allowed)})")
        for key in required:
            if key not in value:
                raise self.fail(_join(where, key), "missing")
        return value

    def items(self, value: Any, where: str) -> list:
        if not isinstance(value, list):
            raise self.fail(where, "expected a list")
        return value

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, "expected a non-empty string")
        return value

    def name(self, value: Any, where: str, known: tuple[str, ...] | None = None, what: str = "") -> str:
        """A non-empty string, one of ``known`` when given."""
        self.text(value, where)
        if known is not None and value not in known:
            raise self.fail(where, f"unknown {what} {value!r}")
        return value

    def names(self, value: Any, where: str, known: tuple[str, ...] | None = None, what: str = "") -> tuple[str, ...]:
        """A name or a non-empty list of distinct names, each in ``known`` when given."""
        if isinstance(value, str):
            return (self.name(value, where, known, what),)
        names = [self.name(v, f"{where}[{i}]", known, what) for i, v in enumerate(self.items(value, where))]
        if not names:
            raise self.fail(where, "expected at least one name")
        self.distinct(names, where, "{}[{}]")
        return tuple(names)

    def distinct(self, names: list[str], where: str, pattern: str) -> None:
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise self.fail(pattern.format(where, i), f"duplicate name {name!r}")

    def schema(self, data: Any) -> TaskSchema:
        data = self.table(data, "", ("name", "concepts", "relations", "mapping"), ("name", "concepts"))
        concepts = tuple(
            self.concept(c, f"concepts[{i}]") for i, c in enumerate(self.items(data["concepts"], "concepts"))
        )
        if not concepts:
            raise self.fail("concepts", "expected at least one concept")
        self.distinct([c.name for c in concepts], "concepts", "{}[{}].name")
        names = tuple(c.name for c in concepts)
        relations = tuple(
            self.relation(r, f"relations[{i}]", names)
            for i, r in enumerate(self.items(data.get("relations", []), "relations"))
        )
        self.distinct([r.name for r in relations], "relations", "{}[{}].name")
        if "mapping" in data:
            mapping = self.mapping(data["mapping"], concepts, relations)
        else:  # a corpus whose type names are the schema's
            mapping = CorpusMapping({c.name: c.name for c in concepts}, {r.name: (r.name,) for r in relations})
        return TaskSchema(self.text(data["name"], "name"), concepts, relations, mapping)

    def concept(self, value: Any, where: str) -> ConceptType:
        value = self.table(value, where, ("name", "query", "labels"), ("name", "query"))
        labels = self.names(value["labels"], f"{where}.labels") if "labels" in value else ()
        name, query = self.name(value["name"], f"{where}.name"), self.text(value["query"], f"{where}.query")
        return ConceptType(name, query, labels)

    def relation(self, value: Any, where: str, concepts: tuple[str, ...]) -> RelationType:
        required = ("name", "head", "tails", "query")
        value = self.table(value, where, (*required, "head_arg"), required)
        heads = self.names(value["head"], f"{where}.head", concepts, "concept")
        tails = self.names(value["tails"], f"{where}.tails", concepts, "concept")
        query = self.text(value["query"], f"{where}.query")
        try:
            placeholders = {f for _, f, _, _ in string.Formatter().parse(query) if f is not None}
        except ValueError:
            raise self.fail(f"{where}.query", "unbalanced braces") from None
        if placeholders != {"head"}:
            raise self.fail(f"{where}.query", "must hold {head} and no other placeholder")
        head_arg = value.get("head_arg", "Arg1")
        if head_arg not in HEAD_ARGS:
            raise self.fail(f"{where}.head_arg", f"expected one of {', '.join(HEAD_ARGS)}")
        return RelationType(self.name(value["name"], f"{where}.name"), heads[0], tails, query, head_arg, heads[1:])

    def mapping(
        self, value: Any, concepts: tuple[ConceptType, ...], relations: tuple[RelationType, ...]
    ) -> CorpusMapping:
        value = self.table(value, "mapping", ("concepts", "relations", "event_arguments", "label_attributes"))
        concept_names = tuple(c.name for c in concepts)
        relation_names = tuple(r.name for r in relations)
        labelled = tuple(c.name for c in concepts if c.labels)
        where = "mapping.concepts"
        concept_map = {
            k: self.name(v, f"{where}.{k}", concept_names, "concept")
            for k, v in self.table(value.get("concepts", {}), where).items()
        }
        where = "mapping.relations"
        relation_map = {
            k: self.names(v, f"{where}.{k}", relation_names, "relation")
            for k, v in self.table(value.get("relations", {}), where).items()
        }
        event_arguments = ()
        if "event_arguments" in value:
            where = "mapping.event_arguments"
            event_arguments = self.names(value["event_arguments"], where, relation_names, "relation")
            for i, name in enumerate(event_arguments):
                if relations[relation_names.index(name)].head_arg != "Arg1":
                    raise self.fail(f"{where}[{i}]", f"relation {name!r} must have head_arg Arg1 (the trigger)")
        where = "mapping.label_attributes"
        label_attributes = {
            self.name(k, f"{where}.{k}", labelled, "concept with labels"): self.name(v, f"{where}.{k}")
            for k, v in self.table(value.get("label_attributes", {}), where).items()
        }
        return CorpusMapping(concept_map, relation_map, event_arguments, label_attributes)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
