"""The n2c2-style text table of an :func:`~clinical_prompt.evaluation.n2c2.evaluate_documents` result."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MODE_HEADER = "{:-^28}"
_COLUMNS = f"{'Prec.':<10}{'Rec.':<10}{'F(b=1)':<8}"


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


def format_table(result: Mapping[str, Any]) -> str:
    """Per-type, micro and macro precision, recall and F1, strict and lenient, for concepts and relations."""
    docs = result["documents"]
    header = (
        f"{docs['gold']} gold documents, {docs['pred']} predicted "
        f"({len(docs['missing_pred'])} without prediction, {len(docs['missing_gold'])} without gold)"
    )
    lines = [header, "", *_section("Concepts", result["concepts"]), "", *_section("Relations", result["relations"])]
    return "".join(line.rstrip() + "\n" for line in lines)
