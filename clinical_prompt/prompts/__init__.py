"""Clinical soft prompts: PEFT config, prompt tables, input and deep injection, the prompted encoder.

Importing this package registers :class:`ClinicalPromptConfig` with PEFT.
"""
from clinical_prompt.layout import AdapterFormatError
from clinical_prompt.prompts.config import AdapterCompatibilityError, ClinicalPromptConfig
from clinical_prompt.prompts.deep import DeepPromptHandle, attach_deep_prompts
from clinical_prompt.prompts.encoder import PromptTables
from clinical_prompt.prompts.inputs import embed_with_prompts
from clinical_prompt.prompts.model import PromptedEncoder
from clinical_prompt.prompts.register import register_config
from clinical_prompt.prompts.report import adapter_size_for, parameter_report

register_config()

__all__ = [
    "AdapterCompatibilityError",
    "AdapterFormatError",
    "ClinicalPromptConfig",
    "DeepPromptHandle",
    "PromptTables",
    "PromptedEncoder",
    "adapter_size_for",
    "attach_deep_prompts",
    "embed_with_prompts",
    "parameter_report",
    "register_config",
]
