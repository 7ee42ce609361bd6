"""The grid of strategies x backbones x corpora: F1, trainable parameters, adapter size, time, memory.

    accelerate launch recipes/compare.py --config recipes/configs/compare.yaml [key=value ...]
    clinical-prompt compare --config recipes/configs/compare.yaml 'backbones=[minilm]'

The config and what is written are described in the README's "Recipes" section.
"""
import sys

from clinical_prompt.recipes.cli import main

if __name__ == "__main__":
    sys.exit(main("compare"))
