"""The two networks trained from scratch on the 8x8 digits: an MLP and a small CNN.

Both take flattened images (N, 64) in [0, 1] and return logits (N, n_classes); they use PyTorch's
default initialisation, which fixes the prior's centre w0 of the PAC-Bayes runs. Neither has
dropout or normalisation layers (the training paper's setting: no extra regularisation).
"""

from __future__ import annotations

import torch
from torch import nn

from workbench.pactrain.config import NETWORKS, PACTrainError

IMAGE_SIDE = 8


class DigitsMLP(nn.Module):
    """64 -> width -> width -> n_classes with ReLU."""

    def __init__(self, hidden_width: int, num_classes: int, pixels: int = IMAGE_SIDE * IMAGE_SIDE) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(pixels, hidden_width),
            nn.ReLU(),
            nn.Linear(hidden_width, hidden_width),
            nn.ReLU(),
            nn.Linear(hidden_width, num_classes),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, 64) -> logits (N, n_classes)."""
        return self.layers(features)


class DigitsCNN(nn.Module):
    """conv3x3(1->16) ReLU maxpool2 -> conv3x3(16->32) ReLU maxpool2 -> linear(32*2*2 -> n_classes)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * (IMAGE_SIDE // 4) ** 2, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, 64) -> logits (N, n_classes); the pixels are read as one 8x8 channel."""
        images = features.reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE)
        return self.head(self.features(images).flatten(1))


def build_network(name: str, num_classes: int, hidden_width: int, seed: int) -> nn.Module:
    """A freshly initialised network; the same ``seed`` gives the same weights (global RNG untouched).

    Raises:
        PACTrainError: an unknown ``name``.
    """
    if name not in NETWORKS:
        raise PACTrainError(f"[pactrain] network {name!r} is unknown; valid networks: {', '.join(NETWORKS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "mlp":
            return DigitsMLP(hidden_width, num_classes)
        return DigitsCNN(num_classes)
