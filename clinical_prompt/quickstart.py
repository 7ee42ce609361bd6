"""The main job on the embedded defaults: the bundled MACCROBAT corpus and the offline MiniLM backbone."""
from __future__ import annotations

import os
from pathlib import Path

BUNDLED_CORPUS = Path(__file__).parent / "data" / "maccrobat2020"
BUNDLED_SCHEMA = "maccrobat-med"


def run_quickstart(output_dir: str | os.PathLike) -> int:
    """Print the bundled corpus's statistics and the alignment check of its schema with the default backbone."""
    from clinical_prompt.corpus.stats import run_alignment_check, run_corpus_stats

    run_corpus_stats(BUNDLED_CORPUS, BUNDLED_SCHEMA)
    print()
    return run_alignment_check(BUNDLED_CORPUS, BUNDLED_SCHEMA)
