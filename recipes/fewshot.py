"""Learning curves: training sizes x strategies x seeds; CSV, markdown table and learning-curve PNG.

    accelerate launch recipes/fewshot.py --config recipes/configs/fewshot-ddi.yaml [key=value ...]
    clinical-prompt fewshot --config recipes/configs/fewshot-ddi.yaml 'fewshot.seeds=[1,2]'

The config and what is written are described in the README's "Recipes" section.
"""
import sys

from clinical_prompt.recipes.cli import main

if __name__ == "__main__":
    sys.exit(main("fewshot"))
