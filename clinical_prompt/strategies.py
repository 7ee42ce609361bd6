"""The four training strategies of the paper, and what each one fixes: input format, frozen parts, learning rates.

=====================  ============  ================  ==============================================
strategy               input format  backbone          trains (default learning rate)
=====================  ============  ================  ==============================================
``finetune``           BIO tags      trained           backbone 2e-5, tagging head 1e-3
``hard-prompt``        text query    trained           backbone 2e-5, span head 1e-3
``soft-prompt``        soft prompt   trained           backbone 2e-5, span head 1e-3, prompts 1e-3
``soft-prompt-frozen`` soft prompt   frozen            span head 1e-3, prompts 1e-2
=====================  ============  ================  ==============================================

Prompt-only training needs a much larger rate than the backbone's (P-tuning v2, Liu et al. 2022, used 1e-2 to 6e-2);
1e-2 is the low end of that range. With a trained backbone the prompts train with it at 1e-3.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

InputFormat = Literal["bio", "hard", "soft"]
INPUT_FORMATS: tuple[str, ...] = ("bio", "hard", "soft")


@dataclass(frozen=True)
class Strategy:
    """One strategy: its input format, whether the backbone is frozen, and its default learning rates.

    A rate is ``None`` for a part the strategy does not train: ``backbone_lr`` when the backbone is frozen,
    ``prompt_lr`` without soft prompts.
    """

    name: str
    input_format: InputFormat
    freeze_backbone: bool
    backbone_lr: float | None
    head_lr: float
    prompt_lr: float | None

    def __post_init__(self) -> None:
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"strategy {self.name!r}: input_format must be one of {INPUT_FORMATS}")
        if (self.backbone_lr is None) != self.freeze_backbone:
            raise ValueError(f"strategy {self.name!r}: backbone_lr must be set exactly when the backbone trains")
        if (self.prompt_lr is None) != (self.input_format != "soft"):
            raise ValueError(f"strategy {self.name!r}: prompt_lr must be set exactly for soft prompts")

    @property
    def uses_soft_prompts(self) -> bool:
        return self.input_format == "soft"

    def learning_rates(self) -> dict[str, float | None]:
        """Default rates ``{"backbone", "head", "prompt"}`` (``None`` for parts that do not train)."""
        return {"backbone": self.backbone_lr, "head": self.head_lr, "prompt": self.prompt_lr}


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("finetune", "bio", freeze_backbone=False, backbone_lr=2e-5, head_lr=1e-3, prompt_lr=None),
        Strategy("hard-prompt", "hard", freeze_backbone=False, backbone_lr=2e-5, head_lr=1e-3, prompt_lr=None),
        Strategy("soft-prompt", "soft", freeze_backbone=False, backbone_lr=2e-5, head_lr=1e-3, prompt_lr=1e-3),
        Strategy("soft-prompt-frozen", "soft", freeze_backbone=True, backbone_lr=None, head_lr=1e-3, prompt_lr=1e-2),
    )
}


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``; raises ``ValueError`` listing the known names otherwise."""
    try:
        return STRATEGIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}") from None
