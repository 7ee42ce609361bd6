"""The output-directory lock of a training run: one run per directory, held through ``filelock`` on every OS.

The lock file ``output_dir/.lock`` names its holder, ``{"pid": ..., "host": ...}``. The OS drops the lock when its
process dies, however it dies (SIGKILL too), so a lock file that no live process locks is what a killed run left:
it is taken over, with the warning ``taking over stale lock {path} left by process {pid@host}, which is gone``
(logger ``clinical_prompt.lock``).
"""
from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

from filelock import FileLock, Timeout

from clinical_prompt.errors import ClinicalPromptError

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class OutputDirInUseError(ClinicalPromptError, RuntimeError):
    """Another live process holds the output directory's lock file."""


def acquire(lock: Path) -> FileLock:
    """Lock ``lock`` (creating it and its folder) and write this process's pid and host in it.

    Raises:
        OutputDirInUseError: another process holds it; the message names that process.
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    left_by = holder(lock)
    file_lock = FileLock(lock, timeout=0, on_acquired=_write_holder)
    try:
        file_lock.acquire()
    except Timeout:
        raise OutputDirInUseError(
            f"output_dir {lock.parent} is in use by process {holder(lock) or 'another process'} (lock file {lock}); "
            "wait for that run to end, or choose another output_dir") from None
    if left_by is not None:
        logger.warning("taking over stale lock %s left by process %s, which is gone", lock, left_by)
    return file_lock


def release(file_lock: FileLock) -> None:
    """Remove the lock file, then unlock it: a run that opened the file meanwhile finds it removed, and retries."""
    Path(file_lock.lock_file).unlink(missing_ok=True)
    file_lock.release()


def holder(lock: Path) -> str | None:
    """``pid@host`` written in the lock file; None where it is missing, empty or cannot be read."""
    try:
        data = lock.read_bytes()[:4096]
    except OSError:
        return None
    if not data:
        return None
    try:
        written = json.loads(data)
        return f"{int(written['pid'])}@{written['host']}"
    except (ValueError, KeyError, TypeError):
        return "unknown (unreadable lock file)"


def _write_holder(fd: int) -> None:
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
