"""clinical-prompt: clinical concept and relation extraction with soft prompts on Hugging Face PEFT.

Importing the package registers :class:`ClinicalPromptConfig` with PEFT, so
``peft.PeftConfig.from_pretrained(adapter_dir)`` returns it with every field.
"""
from clinical_prompt.bank import AdapterBank, load_adapter
from clinical_prompt.brat import BratFormatError, Document, read_corpus, read_document, write_document
from clinical_prompt.evaluation import evaluate_directories, evaluate_documents
from clinical_prompt.prompts import ClinicalPromptConfig, PromptedEncoder, parameter_report
from clinical_prompt.schema import SchemaError, TaskSchema, load_schema

__version__ = "0.1.0"

__all__ = [
    "AdapterBank",
    "BratFormatError",
    "ClinicalPromptConfig",
    "Document",
    "PromptedEncoder",
    "SchemaError",
    "TaskSchema",
    "evaluate_directories",
    "evaluate_documents",
    "load_adapter",
    "load_schema",
    "parameter_report",
    "read_corpus",
    "read_document",
    "write_document",
]
