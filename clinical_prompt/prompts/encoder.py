"""Prompt tables: one block of virtual tokens per prompt block, optionally reparameterized by an MLP or LSTM."""
from __future__ import annotations

import torch
from torch import nn

from clinical_prompt.prompts.config import ClinicalPromptConfig

LSTM_LAYERS = 2


class PromptTables(nn.Module):
    """Trainable prompt tables ``[num_blocks, num_virtual_tokens, width]``.

    Without reparameterization (or in inference mode, where the tables were materialized) the tables are the
    parameter ``tables``. With ``"mlp"`` the parameter ``embeddings`` ``[num_blocks, P, hidden]`` goes through
    hidden -> bottleneck -> tanh -> width (P-tuning v2's prefix projection); with ``"lstm"`` each block runs
    through a bidirectional LSTM and a two-layer ReLU MLP (P-tuning's prompt encoder). The reparameterization
    is shared by the blocks.
    """

    def __init__(self, config: ClinicalPromptConfig) -> None:
        super().__init__()
        self.reparameterization = "none" if config.inference_mode else config.reparameterization
        shape = (config.num_blocks, config.num_virtual_tokens)
        width, hidden = config.table_width, config.token_dim
        bottleneck = config.encoder_hidden_size or hidden
        if self.reparameterization == "none":
            self.tables = nn.Parameter(torch.randn(*shape, width))
        else:
            self.embeddings = nn.Parameter(torch.randn(*shape, hidden))
        if self.reparameterization == "mlp":
            self.projection = nn.Sequential(nn.Linear(hidden, bottleneck), nn.Tanh(), nn.Linear(bottleneck, width))
        elif self.reparameterization == "lstm":
            self.lstm = nn.LSTM(hidden, bottleneck, num_layers=LSTM_LAYERS, bidirectional=True, batch_first=True)
            self.projection = nn.Sequential(
                nn.Linear(2 * bottleneck, 2 * bottleneck), nn.ReLU(), nn.Linear(2 * bottleneck, width)
            )
        self.dropout = nn.Dropout(config.prompt_dropout)

    @property
    def seed(self) -> nn.Parameter:
        """The parameter that prompt initialization writes: the tables, or the reparameterization's input."""
        return self.tables if self.reparameterization == "none" else self.embeddings

    def materialize(self) -> torch.Tensor:
        """The final tables ``[num_blocks, P, width]``, through the reparameterization, without dropout."""
        if self.reparameterization == "none":
            return self.tables
        if self.reparameterization == "mlp":
            return self.projection(self.embeddings)
        return self.projection(self.lstm(self.embeddings)[0])

    def forward(self, block_ids: torch.Tensor) -> torch.Tensor:
        """The prompt of each row's block: ``block_ids [B]`` -> ``[B, P, width]``."""
        return self.dropout(self.materialize()[block_ids])
