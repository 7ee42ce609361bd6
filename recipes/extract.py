"""Annotate documents with a trained extractor; BRAT .txt/.ann out.

    accelerate launch recipes/extract.py --config recipes/configs/extract-maccrobat.yaml [key=value ...]
    python recipes/extract.py --config recipes/configs/extract-maccrobat.yaml

The config and what is written are described in the README's "Recipes" section.
"""
import sys

from clinical_prompt.recipes.cli import main

if __name__ == "__main__":
    sys.exit(main("extract"))
