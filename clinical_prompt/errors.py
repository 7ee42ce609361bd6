"""The base of every error this library raises for a problem in its input: files, configs, arguments, setup.

The command line catches it (``clinical-prompt: error: ...``, exit status 2). Each subclass also derives from the
built-in exception that describes it (``ValueError``, ``ImportError``, ``RuntimeError``), where callers catch that.
"""


class ClinicalPromptError(Exception):
    """An input or setup problem, with a message that names what to fix (files, fields, lines; never note text)."""
