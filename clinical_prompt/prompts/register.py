"""Registration of the clinical prompt config with PEFT, so ``PeftConfig.from_pretrained`` returns it."""
from __future__ import annotations

from peft import PEFT_TYPE_TO_CONFIG_MAPPING, PeftType

from clinical_prompt.prompts.config import ClinicalPromptConfig


def register_config() -> None:
    """Map PEFT's ``PROMPT_TUNING`` type to :class:`ClinicalPromptConfig` (idempotent).

    ``peft.register_peft_method`` only accepts names of the ``PeftType`` enum and refuses types already
    registered, so the class replaces the built-in entry. It subclasses ``PromptTuningConfig`` and defaults every
    added field, so stock prompt-tuning adapters still load (as this class) and build PEFT's prompt embedding.
    """
    PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.PROMPT_TUNING] = ClinicalPromptConfig
