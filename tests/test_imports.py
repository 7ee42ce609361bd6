"""A light core: importing the package and running ``--help`` load no deep learning stack, need no ``fcntl``, and
PEFT still reads clinical adapter configs as :class:`ClinicalPromptConfig`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from clinical_prompt.prompts import ClinicalPromptConfig

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "peft", "accelerate", "datasets")


def run_python(code: str) -> str:
    """``code`` in a fresh interpreter that imports this checkout; its stdout."""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_package_and_command_line_load_no_deep_learning_stack() -> None:
    out = run_python(
        "import sys, clinical_prompt, clinical_prompt.cli, clinical_prompt.brat, clinical_prompt.schema\n"
        "clinical_prompt.cli.build_parser()\n"
        f"print(sorted(set({HEAVY!r}) & set(sys.modules)))"
    )
    assert out.strip() == "[]"


def test_package_imports_without_fcntl() -> None:
    out = run_python(
        "import sys\n"
        "sys.modules['fcntl'] = None  # as on Windows\n"
        "import clinical_prompt, clinical_prompt.training, clinical_prompt.lock, clinical_prompt.cli\n"
        "print(clinical_prompt.Document.__name__)"
    )
    assert out.strip() == "Document"


@pytest.mark.parametrize("order", ["clinical_prompt first", "peft first"])
def test_peft_reads_clinical_configs_after_import_clinical_prompt(tmp_path, order) -> None:
    ClinicalPromptConfig(num_virtual_tokens=4, prompt_blocks=["Drug", "Dosage"], depth="deep").save_pretrained(tmp_path)
    modules = ["clinical_prompt", "peft"] if order == "clinical_prompt first" else ["peft", "clinical_prompt"]
    imports = "\n".join(f"import {module}" for module in modules)
    out = run_python(
        f"{imports}\n"
        f"config = peft.PeftConfig.from_pretrained({str(tmp_path)!r})\n"
        "print(type(config).__name__, config.prompt_blocks, config.depth)"
    )
    assert out.strip() == "ClinicalPromptConfig ['Drug', 'Dosage'] deep"
