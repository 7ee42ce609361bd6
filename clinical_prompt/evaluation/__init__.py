"""2018 n2c2 Track 2 scoring: strict and lenient precision, recall and F1 of concepts and relations."""
from clinical_prompt.evaluation.metric import load_metric
from clinical_prompt.evaluation.n2c2 import evaluate_directories, evaluate_documents, run_evaluate
from clinical_prompt.evaluation.report import format_table
from clinical_prompt.evaluation.scores import Counts

__all__ = ["Counts", "evaluate_directories", "evaluate_documents", "format_table", "load_metric", "run_evaluate"]
