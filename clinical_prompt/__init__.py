"""clinical-prompt: clinical concept and relation extraction with soft prompts on Hugging Face PEFT.

Downstream use in three lines::

    import clinical_prompt
    extractor = clinical_prompt.from_pretrained("org/site-a")      # a hub repo id[@revision] or a local folder
    results = extractor.predict(["note text", ...])                # entities and relations, offsets and scores

The names below are imported on first use (PEP 562), so ``import clinical_prompt`` loads neither torch nor PEFT.

PEFT registration: :class:`ClinicalPromptConfig` takes PEFT's ``PROMPT_TUNING`` entry in
``PEFT_TYPE_TO_CONFIG_MAPPING`` when :mod:`clinical_prompt.prompts` is imported, which every loader of this package
does before it reads an adapter config. So that plain PEFT reads them too, importing this package also registers
it: at once where ``peft`` is already imported, else right after the first ``import peft``. Either way
``import clinical_prompt`` followed by ``peft.PeftConfig.from_pretrained(adapter_dir)`` returns a
``ClinicalPromptConfig`` with every field.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from types import ModuleType

from clinical_prompt._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "AdapterBank": "clinical_prompt.bank",
    "BratFormatError": "clinical_prompt.brat",
    "ClinicalPromptConfig": "clinical_prompt.prompts",
    "ClinicalPromptError": "clinical_prompt.errors",
    "Document": "clinical_prompt.brat",
    "PromptedEncoder": "clinical_prompt.prompts",
    "SchemaError": "clinical_prompt.schema",
    "TaskSchema": "clinical_prompt.schema",
    "evaluate_directories": "clinical_prompt.evaluation",
    "evaluate_documents": "clinical_prompt.evaluation",
    "from_pretrained": "clinical_prompt.extractors",
    "load_extractor": "clinical_prompt.extractors",
    "PullError": "clinical_prompt.pull",
    "load_adapter": "clinical_prompt.bank",
    "load_schema": "clinical_prompt.schema",
    "parameter_report": "clinical_prompt.prompts",
    "read_corpus": "clinical_prompt.brat",
    "read_document": "clinical_prompt.brat",
    "write_document": "clinical_prompt.brat",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(globals(), _EXPORTS)


class _RegisterAfterPeft(importlib.abc.MetaPathFinder):
    """Finds nothing itself: on the first ``import peft`` it has PEFT's own loader run, then registers the config."""

    def find_spec(self, name: str, path: object = None, target: ModuleType | None = None) -> object:
        if name != "peft":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_and_register(module: ModuleType) -> None:
                exec_module(module)
                import clinical_prompt.prompts  # noqa: F401  (registers on import)

            spec.loader.exec_module = exec_and_register
        return spec


if "peft" in sys.modules:
    import clinical_prompt.prompts  # noqa: F401  (registers on import)
elif not any(isinstance(finder, _RegisterAfterPeft) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterPeft())
