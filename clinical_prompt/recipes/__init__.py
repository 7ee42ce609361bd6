"""Recipes: one readable run per task over the library loop, configured by one YAML file.

``train``, ``evaluate``, ``extract``, ``fewshot``, ``transfer``, ``compare`` and ``shape``; run them as
``accelerate launch recipes/<name>.py --config recipes/configs/<x>.yaml [key=value ...]`` or
``clinical-prompt <name> --config ... [key=value ...]``. :mod:`clinical_prompt.recipes.config` describes the
config files, :mod:`clinical_prompt.recipes.metadata` the ``run.json`` written beside every output.
"""
from __future__ import annotations

from clinical_prompt._lazy import lazy_exports

_EXPORTS = {name: "clinical_prompt.recipes.config" for name in ("RECIPES", "ConfigError", "load_config")}
__all__ = [*_EXPORTS, "run_recipe"]
__getattr__ = lazy_exports(globals(), _EXPORTS)


def run_recipe(name: str, config: object) -> dict:
    """Run the recipe ``name`` on its loaded ``config``; its summary (what ``run.json`` lists as outputs)."""
    from importlib import import_module

    from clinical_prompt.recipes.config import RECIPES

    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; recipes: {', '.join(RECIPES)}")
    return import_module(f"clinical_prompt.recipes.{name}").run(config)
