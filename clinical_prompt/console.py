"""What the command-line tools print on stderr: log records (one handler on the ``clinical_prompt`` logger, however
often a command runs in one process) and input problems (one line, exit status 2)."""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from clinical_prompt.errors import ClinicalPromptError


def log_to_stderr(level: int = logging.INFO) -> None:
    """Send ``clinical_prompt`` records of ``level`` and above to stderr, with a time stamp; a more verbose level set
    by the caller stays, and a handler already there is kept rather than doubled."""
    logger = logging.getLogger("clinical_prompt")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)


def run_guarded(run: Callable[[], int]) -> int:
    """``run()``; an input problem (a :class:`ClinicalPromptError` or an ``OSError``) ends with one line
    ``clinical-prompt: error: ...`` and exit status 2."""
    try:
        return run()
    except (ClinicalPromptError, OSError) as error:
        print(f"clinical-prompt: error: {error}", file=sys.stderr)
        return 2
