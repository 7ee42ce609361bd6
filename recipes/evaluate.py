"""Score a trained extractor (the train recipe's model/ folder) on gold documents.

    accelerate launch recipes/evaluate.py --config recipes/configs/evaluate-maccrobat.yaml [key=value ...]
    clinical-prompt evaluate --config recipes/configs/evaluate-maccrobat.yaml batch_size=16

The config and what is written are described in the README's "Recipes" section.
"""
import sys

from clinical_prompt.recipes.cli import main

if __name__ == "__main__":
    sys.exit(main("evaluate"))
