"""Pulling a saved extractor from the Hugging Face Hub: one resolver for every loader.

:func:`saved_extractor` turns a local folder, or a hub repo id ``ORG/NAME`` with an optional revision (``ORG/NAME@REV``
or ``revision=``, a branch, tag or commit) and token, into a verified local folder. A repository is downloaded with
``huggingface_hub.snapshot_download`` into the Hub cache (``HF_HOME``, ``HF_HUB_CACHE``), only the files of the saved
layout and never a pickle; a warm cache serves it with ``HF_HUB_OFFLINE=1``; ``HF_ENDPOINT`` names the hub and the
token defaults to ``HF_TOKEN`` or the stored login. Every entry of the folder must lie inside it (a snapshot's links
into its repository's blobs do), and every file a loader then reads is checked again as untrusted
(:mod:`clinical_prompt.layout`). Errors about a pulled folder name the repository (``ORG/NAME[@REV]/file``), not the
cache path.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import httpx, validate_repo_id

from clinical_prompt.errors import ClinicalPromptError
from clinical_prompt.layout import (
    BACKBONE_DIR,
    CARD_FILE,
    LAYOUT,
    PICKLE_SUFFIXES,
    AdapterFormatError,
    ExtractorFormatError,
    inside,
)
from clinical_prompt.prompts.config import AdapterCompatibilityError
from clinical_prompt.schema import SchemaError

__all__ = ["ALLOW_PATTERNS", "PullError", "parse_repo_id", "resolve_extractor", "saved_extractor"]

ALLOW_PATTERNS = [*sorted(LAYOUT - {CARD_FILE}), f"{BACKBONE_DIR}/*"]
IGNORE_PATTERNS = [f"*{suffix}" for suffix in PICKLE_SUFFIXES]
RENAMED_ERRORS = (AdapterFormatError, AdapterCompatibilityError, ExtractorFormatError, SchemaError)


class PullError(ClinicalPromptError, ValueError):
    """A saved extractor that cannot be had: no such folder or repository, no such revision, or a hub out of reach
    with nothing cached."""


def parse_repo_id(name: str) -> tuple[str, str | None] | None:
    """``("ORG/NAME", "REV")`` of ``"ORG/NAME@REV"`` (``None`` for the revision without ``@``), or ``None`` when
    ``name`` is not such a repo id."""
    repo_id, sign, revision = name.partition("@")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return None
    if repo_id.count("/") != 1 or (sign and not revision):
        return None
    return repo_id, (revision if sign else None)


def _download(repo_id: str, revision: str | None, token: str | None, label: str) -> Path:
    """The snapshot folder of ``repo_id`` at ``revision`` in the Hub cache, the saved layout only."""
    endpoint = constants.ENDPOINT
    try:
        return Path(snapshot_download(repo_id, revision=revision, token=token, allow_patterns=ALLOW_PATTERNS,
                                      ignore_patterns=IGNORE_PATTERNS, library_name="clinical-prompt"))
    except RevisionNotFoundError:
        raise PullError(f"{label}: repository {repo_id} at {endpoint} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise PullError(
            f"{label}: no such local folder, nor a repository {repo_id} at {endpoint} that this token can read "
            "(a private one needs --token or HF_TOKEN)"
        ) from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "unknown"
        raise PullError(f"{label}: HTTP {status} from {endpoint} while downloading; nothing was loaded") from None
    except LocalEntryNotFoundError:
        reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"{endpoint} cannot be reached"
        raise PullError(f"{label}: not (completely) in the Hub cache, and {reason}") from None
    except httpx.HTTPError as error:
        raise PullError(f"{label}: cannot download from {endpoint} ({type(error).__name__})") from None


def resolve_extractor(
    name_or_path: str | os.PathLike, *, revision: str | None = None, token: str | None = None
) -> tuple[Path, str | None]:
    """The verified local folder of a saved extractor, and the name errors give it: ``ORG/NAME[@REV]`` for a hub
    repository, ``None`` for a local folder (a folder of that name wins over a repository).

    Raises:
        PullError: no such folder or repository, no such revision, or nothing cached while the hub is out of reach.
        AdapterFormatError: an entry of the folder leads outside it (naming the entry).
    """
    path = Path(name_or_path)
    if path.exists():
        if revision is not None:
            raise PullError(f"{path}: a local folder has no revision (revision={revision!r})")
        return _verified(path), None
    parsed = parse_repo_id(str(name_or_path))
    if parsed is None:
        raise PullError(f"{name_or_path}: no such folder, and not a hub repo id ORG/NAME[@REVISION]")
    repo_id, given = parsed
    if given is not None and revision is not None and given != revision:
        raise PullError(f"{name_or_path}: names revision {given!r}, but revision={revision!r} was given")
    revision = revision or given
    label = repo_id if revision is None else f"{repo_id}@{revision}"
    folder = _download(repo_id, revision, token, label)
    try:
        return _verified(folder), label
    except AdapterFormatError as error:
        raise _renamed(error, str(folder), label) from None


def _verified(folder: Path) -> Path:
    """``folder``, once every entry under it is known to lie inside it."""
    for root, folders, files in os.walk(folder):
        for name in folders + files:
            inside(Path(root) / name, folder)
    return folder


@contextmanager
def saved_extractor(
    name_or_path: str | os.PathLike, *, revision: str | None = None, token: str | None = None
) -> Iterator[Path]:
    """The verified local folder of a saved extractor (see :func:`resolve_extractor`), for the loader run inside the
    block; its errors about a pulled folder name the repository instead of the cache path."""
    folder, label = resolve_extractor(name_or_path, revision=revision, token=token)
    try:
        yield folder
    except RENAMED_ERRORS as error:
        if label is None:
            raise
        raise _renamed(error, str(folder), label) from None


def _renamed(error: Exception, folder: str, label: str) -> Exception:
    """``error`` of the same type, ``folder`` in its message replaced by ``label``."""
    if isinstance(error, SchemaError):
        return SchemaError(error.source.replace(folder, label), error.field, error.problem)
    return type(error)(str(error).replace(folder, label))
