"""Train on corpus A, score in-domain and on corpus B through a shared schema, per strategy.

    accelerate launch recipes/transfer.py --config recipes/configs/transfer-ade-psytar.yaml [key=value ...]
    clinical-prompt transfer --config recipes/configs/transfer-ade-psytar.yaml 'strategies=[soft-prompt-frozen]'

The config and what is written are described in the README's "Recipes" section.
"""
import sys

from clinical_prompt.recipes.cli import main

if __name__ == "__main__":
    sys.exit(main("transfer"))
