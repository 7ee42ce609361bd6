"""The soft prompt shape study: length, depth, reparameterization, sharing, initialization.

    accelerate launch recipes/shape.py --config recipes/configs/shape-ddi.yaml [key=value ...]
    clinical-prompt shape --config recipes/configs/shape-ddi.yaml 'shape.num_virtual_tokens=[4,64]'

The config and what is written are described in the README's "Recipes" section.
"""
import sys

from clinical_prompt.recipes.cli import main

if __name__ == "__main__":
    sys.exit(main("shape"))
