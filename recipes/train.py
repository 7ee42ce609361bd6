"""Train one extractor, save it with its model card, score it on the test split and write its predictions.

    accelerate launch recipes/train.py --config recipes/configs/train-maccrobat.yaml [key=value ...]
    clinical-prompt train --config recipes/configs/train-maccrobat.yaml training.epochs=5

The config and what is written are described in the README's "Recipes" section.
"""
import sys

from clinical_prompt.recipes.cli import main

if __name__ == "__main__":
    sys.exit(main("train"))
