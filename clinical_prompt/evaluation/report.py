"""The n2c2-style text table of an :func:`~clinical_prompt.evaluation.n2c2.evaluate_documents` result."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MODE_HEADER = "{:-^28}"
_COLUMNS = f"{'Prec.':<10}{'Rec.':<10}{'F(b=1)':<8}"
_MISSING = {"skip": "not scored", "empty": "scored as empty"}
_SIDES = {"gold": "the gold", "pred": "the predictions"}


def _cells(scores: Mapping[str, float]) -> str:
    return f"{scores['precision']:<10.4f}{scores['recall']:<10.4f}{scores['f1']:<8.4f}"


def _section(title: str, scores: Mapping[str, Any]) -> list[str]:
    strict, lenient = scores["strict"], scores["lenient"]
    rows = [(t, strict["per_type"][t], lenient["per_type"][t]) for t in strict["per_type"]]
    rows += [(f"Overall ({kind})", strict[kind], lenient[kind]) for kind in ("micro", "macro")]
    width = max(len(title), *(len(label) for label, _, _ in rows))
    lines = [
        f"{title:<{width}}  {_MODE_HEADER.format(' strict ')}    {_MODE_HEADER.format(' lenient ')}",
        f"{'':<{width}}  {_COLUMNS:<28}    {_COLUMNS}",
    ]
    lines += [f"{label:>{width}}  {_cells(s)}    {_cells(le)}" for label, s, le in rows]
    return lines


def _dropped(kinds: Mapping[str, Mapping[str, int]]) -> str:
    """``3 concepts (type not in schema 3), 2 relations (duplicate 2)``, or ``nothing``."""
    parts = [
        f"{sum(reasons.values())} {kind} ({', '.join(f'{reason} {n}' for reason, n in reasons.items())})"
        for kind, reasons in kinds.items() if reasons
    ]
    return ", ".join(parts) or "nothing"


def _header(result: Mapping[str, Any]) -> list[str]:
    docs = result["documents"]
    lines = [
        f"{docs['scored']} documents scored ({docs['gold']} gold, {docs['pred']} predicted), "
        f"matching: {result['matching']}",
        f"{len(docs['missing_pred'])} without prediction, {len(docs['missing_gold'])} without gold: "
        f"{_MISSING[docs['missing']]}",
    ]
    if "schema" in result:
        schema = result["schema"]
        lines += [f"schema {schema['name']} dropped from {label}: {_dropped(schema['dropped'][side])}"
                  for side, label in _SIDES.items()]
    return lines


def format_table(result: Mapping[str, Any]) -> str:
    """The documents scored, the matching and what a schema dropped, then per-type, micro and macro precision,
    recall and F1, strict and lenient, for concepts and relations."""
    lines = [*_header(result), "", *_section("Concepts", result["concepts"]), "",
             *_section("Relations", result["relations"])]
    return "".join(line.rstrip() + "\n" for line in lines)
