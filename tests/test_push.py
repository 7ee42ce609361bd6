"""``clinical-prompt push``: a saved extractor and its card, uploaded with huggingface_hub to a local stand-in hub
(``hub_standin.py``, served by the ``hub`` fixture). A live test pushes to the real hub when ``HF_TOKEN`` and
``CLINICAL_PROMPT_LIVE_PUSH_REPO`` are set.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path

import huggingface_hub.constants
import pytest
from safetensors.torch import load_file, save_file

from clinical_prompt.card import write_card
from clinical_prompt.cli import main
from clinical_prompt.hub import PushError, files_to_push, push_to_hub
from conftest import MEDICATION_VOCAB, medication_schema, save_tiny_bert, save_untrained_extractors
from hub_standin import REPO, HubStandIn

SENTINEL = "ZEBRAQUOKKA"


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), MEDICATION_VOCAB, hidden_size=32,
                          num_attention_heads=2, max_position_embeddings=64)


@pytest.fixture(scope="module")
def originals(tiny_backbone, tmp_path_factory) -> dict[str, Path]:
    """Saved frozen soft-prompt and hard-prompt (with ``backbone/``) extractors, each with its card; the drug query
    holds ``SENTINEL``."""
    saved = save_untrained_extractors(tmp_path_factory.mktemp("originals"), medication_schema(
        f"What is the drug {SENTINEL}?"), tiny_backbone, base_model_id="org/tiny-bert")
    for directory in saved.values():
        write_card(directory, license="apache-2.0")
    return saved


@pytest.fixture
def adapter(originals, tmp_path) -> Path:
    """A copy of the saved frozen soft-prompt extractor, free to change."""
    return Path(shutil.copytree(originals["soft-prompt-frozen"], tmp_path / "adapter"))


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every entry under ``directory`` (hidden ones too) and the bytes of each file."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(directory.rglob("*"))}


def local_files(directory: Path) -> dict[str, bytes]:
    return {name: content for name, content in snapshot(directory).items() if content != b"<dir>"}


def push_cli(directory: Path, endpoint: str, *options: str) -> int:
    return main(["push", str(directory), "--repo-id", REPO, "--token", "hf_standin", "--endpoint", endpoint, *options])


# --- what is uploaded -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["soft-prompt-frozen", "hard-prompt"])
def test_the_hub_receives_exactly_the_extractor_files_and_its_card(hub, originals, strategy: str) -> None:
    directory = originals[strategy]
    before = snapshot(directory)
    url = push_to_hub(directory, REPO, token="hf_standin", endpoint=hub.url)
    assert hub.files() == local_files(directory)
    assert hub.files()["README.md"] == (directory / "README.md").read_bytes()  # our card, not a generated one
    if strategy == "hard-prompt":
        assert {"backbone/model.safetensors", "heads.safetensors"} <= set(hub.files())
    else:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= set(hub.files())
    assert [name for name, _ in hub.requests] == ["create_repo", "validate_yaml", "preupload", "commit"]
    assert url.startswith(f"{hub.url}/{REPO}/commit/")
    assert snapshot(directory) == before


def test_cli_push_sends_the_token_and_makes_a_private_repo_on_a_branch(hub, adapter: Path, capsys) -> None:
    assert push_cli(adapter, hub.url, "--private", "--revision", "v1") == 0
    repo = hub.repos[REPO]
    assert repo["private"] is True
    assert repo["branches"]["v1"] == local_files(adapter) and repo["branches"]["main"] == {}
    assert {auth for _, auth in hub.requests} == {"Bearer hf_standin"}
    assert f"to {REPO}: {hub.url}/{REPO}/commit/" in capsys.readouterr().out


def test_a_second_push_updates_the_existing_repo(hub, adapter: Path) -> None:
    push_to_hub(adapter, REPO, token="hf_standin", endpoint=hub.url)
    card = (adapter / "README.md").read_text(encoding="utf-8") + "\nSecond version.\n"
    (adapter / "README.md").write_text(card, encoding="utf-8")
    push_to_hub(adapter, REPO, token="hf_standin", endpoint=hub.url)
    assert hub.files()["README.md"].decode() == card
    assert [name for name, _ in hub.requests].count("create_repo") == 2  # the second answered 409, taken as existing


def test_hidden_files_are_not_uploaded(hub, adapter: Path) -> None:
    (adapter / ".adapter_model.safetensors.x1y2.tmp").write_bytes(b"partial write")
    push_to_hub(adapter, REPO, token="hf_standin", endpoint=hub.url)
    assert ".adapter_model.safetensors.x1y2.tmp" not in hub.files()
    assert "README.md" in hub.files()


# --- failures leave a clear error and the folder as it was -----------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "status", "request_line"),
    [
        ("create_repo", 500, "POST /api/repos/create"),
        ("preupload", 403, f"POST /api/models/{REPO}/preupload/main"),
        ("commit", 500, f"POST /api/models/{REPO}/commit/main"),
    ],
)
def test_a_failing_hub_is_named_with_its_status_and_leaves_the_folder(hub, adapter: Path, capsys, endpoint: str,
                                                                      status: int, request_line: str) -> None:
    hub.failures[endpoint] = status
    before = snapshot(adapter)
    assert push_cli(adapter, hub.url) == 2
    output = capsys.readouterr()
    assert output.err.startswith(f"clinical-prompt: error: push to {REPO} failed: HTTP {status} from {request_line}")
    assert SENTINEL not in output.out + output.err and "What is the dosage" not in output.out + output.err
    assert snapshot(adapter) == before
    assert hub.repos.get(REPO, {"branches": {"main": {}}})["branches"]["main"] == {}


def test_an_unreachable_hub_is_a_clear_error(adapter: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    before = snapshot(adapter)
    assert push_cli(adapter, closed) == 2
    err = capsys.readouterr().err
    assert f"push to {REPO} failed: cannot reach {closed} (ConnectError)" in err
    assert snapshot(adapter) == before


# --- refused before any request ---------------------------------------------------------------------------------


def refused(hub: HubStandIn, directory: Path, message: str) -> None:
    before = snapshot(directory)
    with pytest.raises(PushError, match=message) as caught:
        push_to_hub(directory, REPO, token="hf_standin", endpoint=hub.url)
    assert SENTINEL not in str(caught.value)
    assert hub.requests == [] and snapshot(directory) == before


@pytest.mark.parametrize("local", ["/home/alice/models/bert", "/srv/ehr/exports", "C:\\Users\\alice\\bert",
                                   "~/models/bert"])
def test_a_local_path_in_a_file_is_refused_naming_the_file(hub, adapter: Path, local: str) -> None:
    meta = json.loads((adapter / "extractor.json").read_text())
    (adapter / "extractor.json").write_text(json.dumps({**meta, "trained_from": local}, indent=2))
    refused(hub, adapter, r"extractor.json:\d+: holds a local absolute path")


def test_a_local_path_in_a_safetensors_header_is_refused(hub, adapter: Path) -> None:
    weights = adapter / "adapter_model.safetensors"
    save_file(load_file(weights), weights, metadata={"format": "pt", "source": "/data/hospital/run-3/"})
    refused(hub, adapter, r"adapter_model.safetensors:1: holds a local absolute path")


def test_a_local_path_in_the_card_is_refused(hub, adapter: Path) -> None:
    card = adapter / "README.md"
    card.write_text(card.read_text(encoding="utf-8") + "\nTrained from /mnt/notes/2024/.\n", encoding="utf-8")
    refused(hub, adapter, r"README.md:\d+: holds a local absolute path")


def test_urls_and_slashes_in_prose_are_not_local_paths(hub, adapter: Path) -> None:
    card = adapter / "README.md"
    extra = "\nSee https://huggingface.co/docs/hub/model-cards and n/a, and/or mg/day.\n"
    card.write_text(card.read_text(encoding="utf-8") + extra, encoding="utf-8")
    push_to_hub(adapter, REPO, token="hf_standin", endpoint=hub.url)
    assert hub.files()["README.md"] == card.read_bytes()


def test_files_outside_the_saved_layout_are_refused(hub, adapter: Path) -> None:
    (adapter / "notes.txt").write_text(f"Patient {SENTINEL} took aspirin.\n")
    (adapter / "predictions").mkdir()
    (adapter / "predictions" / "doc1.ann").write_text(f"T1\tDrug 0 7\t{SENTINEL}\n")
    refused(hub, adapter, r"holds \['notes.txt', 'predictions/'\], not part of a saved extractor")


def test_a_symbolic_link_is_refused(hub, adapter: Path, tmp_path: Path) -> None:
    outside = tmp_path / "schema-elsewhere.json"
    (adapter / "schema.json").rename(outside)
    (adapter / "schema.json").symlink_to(outside)
    refused(hub, adapter, r"schema.json: a symbolic link")


def test_a_pickle_is_refused(hub, originals, tmp_path: Path) -> None:
    directory = Path(shutil.copytree(originals["hard-prompt"], tmp_path / "hard"))
    (directory / "backbone" / "pytorch_model.bin").write_bytes(b"\x80\x04N.")
    refused(hub, directory, r"pytorch_model.bin: pickle weights are never uploaded")


def test_a_missing_card_is_refused_with_the_command_that_writes_it(hub, adapter: Path) -> None:
    (adapter / "README.md").unlink()
    refused(hub, adapter,
            rf"README.md: missing; write the model card first: clinical-prompt card {re.escape(str(adapter))}")


def test_an_invalid_repo_id_is_refused(hub, adapter: Path, capsys) -> None:
    assert main(["push", str(adapter), "--repo-id", "a/b/c", "--endpoint", hub.url]) == 2
    assert "repo id 'a/b/c' is not valid" in capsys.readouterr().err
    assert hub.requests == []


def test_files_to_push_lists_the_layout_only(originals) -> None:
    files = files_to_push(originals["soft-prompt-frozen"])
    assert sorted(files) == ["README.md", "adapter_config.json", "adapter_model.safetensors", "extractor.json",
                             "labels.json", "schema.json"]


# --- the real hub, opt-in ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not (os.environ.get("HF_TOKEN") and os.environ.get("CLINICAL_PROMPT_LIVE_PUSH_REPO")),
                    reason="set HF_TOKEN and CLINICAL_PROMPT_LIVE_PUSH_REPO (a model repo to write to) to push live")
def test_live_push_to_the_hub(originals, tmp_path: Path) -> None:
    from huggingface_hub import HfApi, hf_hub_download

    repo_id = os.environ["CLINICAL_PROMPT_LIVE_PUSH_REPO"]
    directory = originals["soft-prompt-frozen"]
    push_to_hub(directory, repo_id, private=True)
    assert set(local_files(directory)) <= set(HfApi().list_repo_files(repo_id))
    card = hf_hub_download(repo_id, "README.md", local_dir=tmp_path, force_download=True)
    assert Path(card).read_bytes() == (directory / "README.md").read_bytes()
