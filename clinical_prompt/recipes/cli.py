"""Command-line front of the recipes: ``--config FILE [key=value ...]``, shared by ``clinical-prompt <recipe>`` and
the scripts in ``recipes/``. Importing it is cheap: the recipes load when one runs."""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from clinical_prompt.console import run_guarded


def add_recipe_arguments(parser: argparse.ArgumentParser, *, config_required: bool = True) -> None:
    """A recipe's arguments: ``--config``, ``--print-config`` and the ``key=value`` overrides."""
    parser.add_argument("--config", required=config_required, help="the recipe's YAML config")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and stop")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides of config values, e.g. training.epochs=3 'fewshot.sizes=[5,10]'")


def run_recipe_command(name: str, args: argparse.Namespace) -> int:
    """Load and check the config (every problem is reported before any work), then run the recipe."""
    from clinical_prompt.recipes import load_config, run_recipe
    from clinical_prompt.recipes.config import config_to_yaml

    config = load_config(name, args.config, args.overrides)
    if args.print_config:
        print(config_to_yaml(config), end="")
        return 0
    _log_to_stderr()
    run_recipe(name, config)
    _end_processes()
    return 0


def _end_processes() -> None:
    """Under ``accelerate launch``, let every process finish before the process group is torn down: a process
    that exits while another still talks to it can abort the launch (gloo on CPU)."""
    from clinical_prompt.distributed import process_state

    state = process_state()
    if state.num_processes > 1:
        state.wait_for_everyone()
        state.destroy_process_group()


def _log_to_stderr() -> None:
    from clinical_prompt.console import log_to_stderr
    from clinical_prompt.distributed import process_state

    log_to_stderr(logging.INFO if process_state().is_main_process else logging.WARNING)


def main(name: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``recipes/<name>.py``; input problems exit with status 2 and one message."""
    from clinical_prompt.recipes import RECIPES

    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}")
    parser = argparse.ArgumentParser(prog=f"recipes/{name}.py", description=RECIPES[name].__doc__)
    add_recipe_arguments(parser)
    args = parser.parse_args(argv)
    return run_guarded(lambda: run_recipe_command(name, args))
