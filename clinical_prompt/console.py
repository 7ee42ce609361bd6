"""Log records of the command-line tools on stderr: one handler on the ``clinical_prompt`` logger, however often
a command runs in one process."""
from __future__ import annotations

import logging


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
