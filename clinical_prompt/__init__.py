"""clinical-prompt: clinical concept and relation extraction with soft prompts on Hugging Face PEFT.

Downstream use in three lines::

    import clinical_prompt
    extractor = clinical_prompt.from_pretrained("org/site-a")      # a hub repo id[@revision] or a local folder
    results = extractor.predict(["note text", ...])                # entities and relations, offsets and scores

Importing the package registers :class:`ClinicalPromptConfig` with PEFT, so
``peft.PeftConfig.from_pretrained(adapter_dir)`` returns it with every field.
"""
from clinical_prompt.bank import AdapterBank, load_adapter
from clinical_prompt.brat import BratFormatError, Document, read_corpus, read_document, write_document
from clinical_prompt.evaluation import evaluate_directories, evaluate_documents
from clinical_prompt.extractors import load_extractor
from clinical_prompt.prompts import ClinicalPromptConfig, PromptedEncoder, parameter_report
from clinical_prompt.pull import PullError
from clinical_prompt.schema import SchemaError, TaskSchema, load_schema

__version__ = "0.1.0"

from_pretrained = load_extractor  # the Hugging Face name: any saved extractor, by hub repo id or folder

__all__ = [
    "AdapterBank",
    "BratFormatError",
    "ClinicalPromptConfig",
    "Document",
    "PromptedEncoder",
    "PullError",
    "SchemaError",
    "TaskSchema",
    "evaluate_directories",
    "evaluate_documents",
    "from_pretrained",
    "load_adapter",
    "load_extractor",
    "load_schema",
    "parameter_report",
    "read_corpus",
    "read_document",
    "write_document",
]
