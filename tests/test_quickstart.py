"""The main job end to end on a few bundled notes: adapter, card, metrics and predictions where it says."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from clinical_prompt.brat import read_corpus
from clinical_prompt.quickstart import BUNDLED_CORPUS, QuickstartConfig, run_quickstart
from clinical_prompt.schema import load_schema


@pytest.mark.slow
def test_quickstart_writes_adapter_card_metrics_and_predictions(tmp_path: Path, minilm_path) -> None:
    config = QuickstartConfig(output_dir=str(tmp_path / "out"), train_documents=4, test_documents=2, epochs=1)
    assert run_quickstart(config) == 0
    out = Path(config.output_dir)
    adapter = {p.name for p in (out / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "extractor.json", "schema.json", "README.md"} <= adapter
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["prompt_start_layer"] == 3  # 6 layers / 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"matching", "concepts", "relations", "documents"}
    assert metrics["matching"] == "official" and "Counting: `official`" in (out / "adapter" / "README.md").read_text()
    assert metrics["documents"]["scored"] == 2 and metrics["documents"]["missing_pred"] == []
    held_out = sorted(p.stem for p in BUNDLED_CORPUS.glob("*.ann"))[-2:]
    assert sorted(p.stem for p in (out / "predictions").glob("*.ann")) == held_out
    read_corpus(out / "predictions")  # valid BRAT, text beside each .ann
    # no words of the held-out notes, beyond the schema's own queries, in the adapter or its card
    # (predictions are where note text belongs)
    queries = json.dumps(load_schema(config.schema).to_dict()).lower()
    note_words = {w for doc in read_corpus(BUNDLED_CORPUS).documents if doc.doc_id in held_out
                  for w in doc.text.split() if len(w) > 12 and w.isalpha() and w.lower() not in queries}
    artifact = b"".join(p.read_bytes() for p in (out / "adapter").iterdir()).decode("utf-8", "replace")
    assert note_words and not [w for w in note_words if w in artifact]
