"""The baseline PAC-Bayes training is compared with: Adam under a small grid search.

For one network and seed (``adam_grid_search``):

1. The training set is split (stratified) into a fit part and a validation part
   (``validation_fraction``).
2. Every cell (learning rate, weight decay) of the grid trains the network from the same random
   initialisation on the fit part for ``epochs`` epochs, with the same batches; weight decay is
   torch ``Adam``'s L2 term (``weight_decay * w`` added to the gradient), not AdamW's decoupled decay.
3. The cell with the best validation accuracy (ties: the lower validation cross-entropy, then the
   earlier cell) is retrained on the whole training set, again from the same initialisation and
   for the same epochs, and that network's test accuracy is the baseline's result.

Every cell's test accuracy (after training on the fit part) is recorded too, which shows what an
oracle choice of the cell would have scored; the chosen cell never looks at the test set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from workbench.pactrain.config import PACTrainConfig
from workbench.pactrain.data import DigitsSplit, validation_split
from workbench.pactrain.loop import accuracy, current_weights, epoch_batches, network_logits, reproducible_cpu


@dataclass(frozen=True)
class GridCell:
    """One cell of the Adam grid, trained on the fit part; accuracies in [0, 1], loss in nats."""

    learning_rate: float
    weight_decay: float
    validation_accuracy: float
    validation_loss: float
    test_accuracy: float


@dataclass(frozen=True)
class AdamGridRun:
    """The grid, the chosen cell, and the retrained network's accuracies."""

    grid: tuple[GridCell, ...]
    chosen: GridCell
    test_accuracy: float
    train_accuracy: float


def train_adam(
    network: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    learning_rate: float,
    weight_decay: float,
    epochs: int,
    batch_size: int,
    seed: int,
) -> dict[str, torch.Tensor]:
    """Train ``network`` in place with Adam on mean cross-entropy; return its final weights (name -> tensor)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate, weight_decay=weight_decay)
    for _ in range(epochs):
        for batch in epoch_batches(int(labels.shape[0]), batch_size, generator):
            loss = F.cross_entropy(network(features[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call, unused-ignore]  # untyped in torch
            optimizer.step()
    return current_weights(network)


def adam_grid_search(
    new_network: Callable[[], nn.Module], split: DigitsSplit, config: PACTrainConfig, seed: int
) -> AdamGridRun:
    """Choose (learning rate, weight decay) on a validation split, retrain on all training data, test.

    Args:
        new_network: returns the same freshly initialised network on every call.
    """
    with reproducible_cpu():
        fit_x, fit_y, val_x, val_y = validation_split(
            split.train_features, split.train_labels, config.validation_fraction, seed
        )
        cells = []
        for learning_rate in config.adam_learning_rates:
            for weight_decay in config.adam_weight_decays:
                network = new_network()
                weights = train_adam(
                    network, fit_x, fit_y, learning_rate, weight_decay, config.epochs, config.batch_size, seed
                )
                with torch.no_grad():
                    validation_loss = float(F.cross_entropy(network_logits(network, weights, val_x), val_y))
                cells.append(
                    GridCell(
                        learning_rate=learning_rate,
                        weight_decay=weight_decay,
                        validation_accuracy=accuracy(network, weights, val_x, val_y),
                        validation_loss=validation_loss,
                        test_accuracy=accuracy(network, weights, split.test_features, split.test_labels),
                    )
                )
        chosen = min(cells, key=lambda cell: (-cell.validation_accuracy, cell.validation_loss))
        network = new_network()
        weights = train_adam(
            network,
            split.train_features,
            split.train_labels,
            chosen.learning_rate,
            chosen.weight_decay,
            config.epochs,
            config.batch_size,
            seed,
        )
        return AdamGridRun(
            grid=tuple(cells),
            chosen=chosen,
            test_accuracy=accuracy(network, weights, split.test_features, split.test_labels),
            train_accuracy=accuracy(network, weights, split.train_features, split.train_labels),
        )
