"""``ruff check`` (configured in pyproject.toml: pyflakes, pycodestyle, import order, pyupgrade, bugbear) is clean."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_check_is_clean() -> None:
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert "No module named ruff" not in done.stderr, "ruff is missing: pip install -c constraints.txt -e '.[test]'"
    assert done.returncode == 0, done.stdout + done.stderr
