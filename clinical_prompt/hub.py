"""Pushing a saved extractor to the Hugging Face Hub: its own files and its model card, never a local path.

:func:`push_to_hub` uploads the files of the saved layout (``extractor.json``, ``schema.json``, ``labels.json``, the
adapter or head weights, ``backbone/`` where the backbone was trained) and the ``README.md`` that
:mod:`clinical_prompt.card` wrote, byte for byte, in one commit (``HfApi.create_repo``, then ``create_commit``; not
PEFT's ``push_to_hub``, which replaces the card). Before any request it refuses a folder that holds anything else
(other than hidden files, which are not uploaded), a symbolic link, a pickle, or a file with a local absolute path in
it (safetensors: in the header). Nothing in the local folder is written.
"""
from __future__ import annotations

import os
import re
import struct
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from huggingface_hub.utils import httpx, validate_repo_id

from clinical_prompt.errors import ClinicalPromptError
from clinical_prompt.layout import BACKBONE_DIR, CARD_FILE, LAYOUT, PICKLE_SUFFIXES, read_extractor_meta

__all__ = ["PushError", "files_to_push", "push_to_hub"]

# a POSIX path of two components or more, a Windows drive, a home directory; not URLs ("https://") nor "and/or"
LOCAL_PATH = re.compile(r"(?<![\w.:/~-])/[\w.-]+/|(?<!\w)[A-Za-z]:[\\/]|(?<![\w.~/-])~/")
COMMIT_MESSAGE = "Upload clinical-prompt extractor"


class PushError(ClinicalPromptError):
    """A push refused before any request (a file that must not leave the machine) or failed at the hub."""


def _searched_text(path: Path, content: bytes) -> str:
    """What may hold a path: a safetensors file's JSON header (its tensor bytes are numbers), any other file whole."""
    if path.suffix == ".safetensors":
        header_size = struct.unpack("<Q", content[:8])[0] if len(content) >= 8 else 0
        content = content[8 : 8 + header_size]
    return content.decode("utf-8", errors="replace")


def _check_file(path: Path, content: bytes) -> None:
    if path.suffix in PICKLE_SUFFIXES:
        raise PushError(f"{path}: pickle weights are never uploaded; save the extractor again (safetensors)")
    text = _searched_text(path, content)
    found = LOCAL_PATH.search(text)
    if found:
        line = text.count("\n", 0, found.start()) + 1
        raise PushError(f"{path}:{line}: holds a local absolute path; remove it before pushing (nothing was uploaded)")


def files_to_push(directory: str | os.PathLike) -> dict[str, bytes]:
    """The content of each file :func:`push_to_hub` uploads, by its path in the repository, once all are checked.

    Raises:
        PushError: naming the file: the card is missing, or a file is not part of the saved layout, is a symbolic
            link or a pickle, or holds a local absolute path.
    """
    directory = Path(directory)
    read_extractor_meta(directory)  # a saved extractor, or ExtractorFormatError
    if not (directory / CARD_FILE).is_file():
        raise PushError(
            f"{directory / CARD_FILE}: missing; write the model card first: clinical-prompt card {directory}"
        )
    files: dict[str, bytes] = {}
    strays: list[str] = []
    for root, folders, names in os.walk(directory):
        descend = []
        for name in sorted(folders + names):
            path = Path(root) / name
            relative = path.relative_to(directory).as_posix()
            if name.startswith("."):
                continue
            if path.is_symlink():
                raise PushError(f"{path}: a symbolic link; push uploads the folder's own files only")
            if relative not in LAYOUT | {BACKBONE_DIR} and not relative.startswith(f"{BACKBONE_DIR}/"):
                strays.append(f"{relative}/" if path.is_dir() else relative)
            elif path.is_dir():
                descend.append(name)
            else:
                content = path.read_bytes()
                _check_file(path, content)
                files[relative] = content
        folders[:] = descend
    if strays:
        raise PushError(
            f"{directory}: holds {strays}, not part of a saved extractor; move them out (push uploads "
            "the extractor's files and its card only)"
        )
    return files


def _request_of(error: HfHubHTTPError) -> str:
    """``METHOD /path`` of the failed request (the URL path holds the repository id and revision, no content)."""
    try:
        request = error.response.request
        return f"{request.method} {request.url.path}"
    except (AttributeError, RuntimeError):
        return "a request"


def push_to_hub(
    directory: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    commit_message: str = COMMIT_MESSAGE,
) -> str:
    """Upload a saved extractor and its card (see :func:`files_to_push`) to the model repository ``repo_id``,
    creating it (``private`` where new) and the branch ``revision`` where missing; the commit's URL.

    ``token`` defaults to ``HF_TOKEN`` or the stored login, ``endpoint`` to ``HF_ENDPOINT`` or the public hub.

    Raises:
        PushError: a file refused before any request, or a failed request (naming the repository, the HTTP status
            and the request, never file contents); the local folder is left as it was.
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PushError(f"repo id {repo_id!r} is not valid: {error}") from None
    files = files_to_push(directory)
    api = HfApi(endpoint=endpoint, token=token)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=content) for name, content in files.items()]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision)
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "unknown"
        raise PushError(
            f"push to {repo_id} failed: HTTP {status} from {_request_of(error)} at {api.endpoint}; "
            "the local folder is unchanged"
        ) from None
    except (httpx.HTTPError, OfflineModeIsEnabled) as error:
        raise PushError(
            f"push to {repo_id} failed: cannot reach {api.endpoint} ({type(error).__name__}); "
            "the local folder is unchanged"
        ) from None
    return commit.commit_url
