"""What a recipe writes beside its outputs (``run.json``): the resolved config, package versions, the SHA-256 of
every data file it read, the git revision of the code and the number of processes."""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clinical_prompt.atomic import write_json
from clinical_prompt.readers import resolve_corpus_path
from clinical_prompt.recipes.config import config_to_dict

RUN_FILE = "run.json"
PACKAGES = ("clinical-prompt", "torch", "transformers", "peft", "accelerate", "datasets", "evaluate", "safetensors")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a run depends on (``None`` where one is not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision(directory: str | os.PathLike | None = None) -> str:
    """The commit of the git checkout holding ``directory`` (default: this package), ``+dirty`` when it has
    uncommitted changes; ``"unknown"`` outside a checkout or without git."""
    cwd = Path(directory) if directory is not None else Path(__file__).resolve().parent
    try:
        revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return revision + ("+dirty" if status.strip() else "") if revision else "unknown"


def path_checksums(path: str | os.PathLike) -> dict[str, Any]:
    """``{"files": n, "sha256": digest}`` of a file or of every file under a folder (relative names and contents,
    in sorted order)."""
    root = resolve_corpus_path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update((file.relative_to(root).as_posix() if file != root else file.name).encode() + b"\0")
        with file.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    return {"files": len(files), "sha256": digest.hexdigest()}


def data_paths(config: Any, prefix: str = "") -> dict[str, str]:
    """Every set path field of ``config`` (dotted key -> value)."""
    found: dict[str, str] = {}
    for spec in dataclasses.fields(config):
        value, key = getattr(config, spec.name), f"{prefix}{spec.name}"
        if spec.metadata.get("path") and value is not None:
            found[key] = str(value)
        elif dataclasses.is_dataclass(value):
            found.update(data_paths(value, f"{key}."))
        elif isinstance(value, dict):
            for name, item in value.items():
                if dataclasses.is_dataclass(item):
                    found.update(data_paths(item, f"{key}.{name}."))
    return found


def run_metadata(recipe: str, config: Any, *, num_processes: int = 1) -> dict[str, Any]:
    """The ``run.json`` content of a recipe run (see the module docstring)."""
    return {
        "recipe": recipe,
        "config": config_to_dict(config),
        "versions": package_versions(),
        "data": {key: {"path": path, **path_checksums(path)} for key, path in data_paths(config).items()},
        "git_revision": git_revision(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "num_processes": num_processes,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_run_metadata(directory: str | os.PathLike, metadata: dict[str, Any]) -> Path:
    """Write ``run.json`` into ``directory`` atomically; its path."""
    path = Path(directory) / RUN_FILE
    write_json(path, metadata)
    return path


def finished(metadata: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` with the end time and what the run produced (file names, figures; never note text)."""
    return {**metadata, "finished": datetime.now(UTC).isoformat(timespec="seconds"), "outputs": outputs}
