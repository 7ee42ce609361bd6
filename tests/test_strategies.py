"""The four strategies: one switch, consistent defaults, helpful errors."""
from __future__ import annotations

import pytest

from clinical_prompt.strategies import STRATEGIES, Strategy, get_strategy


def test_four_strategies_with_their_input_formats_and_frozen_parts() -> None:
    shape = {name: (s.input_format, s.freeze_backbone) for name, s in STRATEGIES.items()}
    assert shape == {
        "finetune": ("bio", False),
        "hard-prompt": ("hard", False),
        "soft-prompt": ("soft", False),
        "soft-prompt-frozen": ("soft", True),
    }
    assert all(get_strategy(name) is strategy for name, strategy in STRATEGIES.items())


def test_default_rates_follow_the_paper_and_p_tuning_v2() -> None:
    for strategy in STRATEGIES.values():
        rates = strategy.learning_rates()
        assert (rates["backbone"] is None) == strategy.freeze_backbone
        assert (rates["prompt"] is None) == (strategy.input_format != "soft")
        if not strategy.freeze_backbone:
            assert rates["backbone"] == 2e-5
            assert rates["head"] > rates["backbone"]
    frozen, unfrozen = get_strategy("soft-prompt-frozen"), get_strategy("soft-prompt")
    assert 1e-2 <= frozen.prompt_lr <= 6e-2  # P-tuning v2's prompt-only range
    assert frozen.prompt_lr > unfrozen.prompt_lr


def test_unknown_strategy_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'prompt-tuning'") as error:
        get_strategy("prompt-tuning")
    for name in STRATEGIES:
        assert name in str(error.value)
    with pytest.raises(ValueError, match="unknown strategy"):
        get_strategy(None)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (dict(input_format="text", freeze_backbone=False, backbone_lr=1e-5, prompt_lr=None), "input_format"),
        (dict(input_format="soft", freeze_backbone=True, backbone_lr=1e-5, prompt_lr=1e-2), "backbone_lr"),
        (dict(input_format="hard", freeze_backbone=False, backbone_lr=1e-5, prompt_lr=1e-2), "prompt_lr"),
        (dict(input_format="soft", freeze_backbone=False, backbone_lr=1e-5, prompt_lr=None), "prompt_lr"),
    ],
)
def test_inconsistent_strategy_is_refused(fields: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Strategy("custom", head_lr=1e-3, **fields)
