"""The n2c2 scores as an ``evaluate`` metric module shipped in the package."""
from __future__ import annotations

from pathlib import Path
from typing import Any

METRIC_PATH = Path(__file__).with_name("n2c2_metric.py")


def load_metric(**kwargs: Any) -> Any:
    """``evaluate.load`` of the shipped n2c2 metric (works offline); ``kwargs`` go to ``evaluate.load``."""
    import evaluate

    return evaluate.load(str(METRIC_PATH), **kwargs)
