"""Registration of the clinical prompt config with PEFT, so ``PeftConfig.from_pretrained`` returns it."""
from __future__ import annotations

from peft import PEFT_TYPE_TO_CONFIG_MAPPING, PeftType
from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
from peft.tuners.prompt_tuning import PromptEmbedding

from clinical_prompt.layout import AdapterFormatError
from clinical_prompt.prompts.config import ClinicalPromptConfig
from clinical_prompt.prompts.model import TABLES_KEY


class PromptEmbeddingRefusingClinicalAdapters(PromptEmbedding):
    """PEFT's prompt embedding, which refuses the weights of a clinical adapter with a message saying how to load it.

    A clinical adapter holds prompt blocks per question type (input or deep) and a span head, which
    ``PeftModel.from_pretrained`` cannot run; without this it fails on a missing ``prompt_embeddings`` tensor.
    """

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name: str, state_dict: dict) -> dict:
        if TABLES_KEY in state_dict:
            raise AdapterFormatError(
                "this is a clinical-prompt adapter (prompt blocks and a span head), which PeftModel cannot run; "
                "load it with clinical_prompt.from_pretrained(repo_id_or_dir) or "
                "clinical_prompt.load_adapter(base_model, repo_id_or_dir), or serve several with "
                "clinical_prompt.AdapterBank"
            )
        return super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)


def register_config() -> None:
    """Map PEFT's ``PROMPT_TUNING`` type to :class:`ClinicalPromptConfig` (idempotent).

    ``peft.register_peft_method`` only accepts names of the ``PeftType`` enum and refuses types already
    registered, so the class replaces the built-in entry. It subclasses ``PromptTuningConfig`` and defaults every
    added field, so stock prompt-tuning adapters still load (as this class) and build PEFT's prompt embedding, through
    :class:`PromptEmbeddingRefusingClinicalAdapters`.
    """
    PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.PROMPT_TUNING] = ClinicalPromptConfig
    PEFT_TYPE_TO_TUNER_MAPPING[PeftType.PROMPT_TUNING] = PromptEmbeddingRefusingClinicalAdapters
