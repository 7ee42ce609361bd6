"""The lock file agrees with setup.cfg and quickstart.sh: every dependency pinned, within its bounds, torch left out."""
from __future__ import annotations

import configparser
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pairs = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {canonicalize_name(name): version for name, version in pairs}


def requirements(*extras: str) -> list[Requirement]:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    lines = setup["options"]["install_requires"].split()
    for extra in extras:
        lines += setup["options.extras_require"][extra].split()
    return [Requirement(line) for line in lines]


def test_every_dependency_is_pinned_within_its_bounds() -> None:
    pinned = pins()
    for requirement in requirements("test", "demo"):
        name = canonicalize_name(requirement.name)
        if name == "torch":
            assert name not in pinned, "torch is installed by quickstart.sh (TORCH_SPEC), not pinned"
            continue
        assert name in pinned, f"{name} is not in constraints.txt"
        assert requirement.specifier.contains(pinned[name]), f"{name}=={pinned[name]} is outside {requirement}"


def test_quickstart_torch_satisfies_setup_cfg() -> None:
    script = (ROOT / "quickstart.sh").read_text()
    default = re.search(r"TORCH_SPEC:-torch==([\w.+]+)}", script).group(1)
    [torch] = [requirement for requirement in requirements() if requirement.name == "torch"]
    assert torch.specifier.contains(default)
    assert "-c constraints.txt" in script
