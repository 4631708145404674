"""PAC-Bayes training from scratch and the Adam grid baseline, on small subsets of the 8x8 digits."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from workbench.pactrain.baseline import adam_grid_search
from workbench.pactrain.config import PACTrainConfig, PACTrainError
from workbench.pactrain.data import DigitsSplit, digits_split
from workbench.pactrain.networks import build_network
from workbench.pactrain.training import initial_log_std, train_pac_bayes

SMALL = PACTrainConfig(epochs=20, batch_size=32, train_size=300, hidden_width=64)
CHANCE = 0.1


@pytest.fixture(scope="module")
def split() -> DigitsSplit:
    return digits_split(0, SMALL.test_fraction, SMALL.train_size)


def test_digits_split_is_stratified_scaled_and_seeded() -> None:
    first = digits_split(0, 0.3, 300)
    again = digits_split(0, 0.3, 300)
    other = digits_split(1, 0.3, 300)
    assert first.train_features.shape == (300, 64) and first.train_features.dtype == torch.float32
    assert first.test_labels.shape == (540,)
    assert float(first.train_features.min()) == 0.0 and float(first.train_features.max()) == 1.0
    assert set(torch.bincount(first.train_labels, minlength=10).tolist()) <= {29, 30, 31}
    assert torch.equal(first.train_labels, again.train_labels)
    assert not torch.equal(first.test_features, other.test_features)


def test_train_size_beyond_the_split_is_one_line() -> None:
    with pytest.raises(PACTrainError, match=r"train_size = 1300 exceeds the 1257 training digits"):
        digits_split(0, 0.3, 1300)


def test_unknown_network_is_one_line() -> None:
    with pytest.raises(PACTrainError, match=r"network 'resnet' is unknown; valid networks: mlp, cnn"):
        build_network("resnet", 10, 64, 0)


def test_pac_bayes_training_from_scratch_beats_chance_and_bounds_its_loss(split: DigitsSplit) -> None:
    network = build_network("mlp", 10, SMALL.hidden_width, 0)
    initial = {name: tensor.detach().clone() for name, tensor in network.named_parameters()}
    untrained = train_pac_bayes(network, split, dataclasses.replace(SMALL, epochs=1, stage1_epochs=0), 0)
    run = train_pac_bayes(build_network("mlp", 10, SMALL.hidden_width, 0), split, SMALL, 0)
    assert run.test_accuracy > 5 * CHANCE
    assert run.test_accuracy > untrained.test_accuracy + 0.2
    report = run.report
    assert report.trivial_bound == pytest.approx(math.log(10))
    assert report.bound == pytest.approx(report.empirical_risk + report.complexity, rel=1e-6)
    assert report.kl > 0 and report.k > 0
    assert SMALL.bound.gamma_min <= report.gamma <= SMALL.bound.gamma_max
    assert not report.vacuous  # 300 digits and 20 epochs already give a bound under ln 10
    assert set(run.weights) == set(initial)
    assert run.posterior_log_std.shape == (sum(t.numel() for t in initial.values()),)
    assert run.prior_log_std.shape == (len(initial),)


def test_stage_two_keeps_the_noise_and_prior_scales_and_stage_one_learns_them(split: DigitsSplit) -> None:
    config = dataclasses.replace(SMALL, epochs=2)
    network = build_network("mlp", 10, SMALL.hidden_width, 0)
    start = initial_log_std({name: tensor.detach() for name, tensor in network.named_parameters()})
    frozen = train_pac_bayes(network, split, dataclasses.replace(config, stage1_epochs=0), 0)
    assert torch.all(frozen.posterior_log_std == start) and torch.all(frozen.prior_log_std == start)
    learned = train_pac_bayes(build_network("mlp", 10, SMALL.hidden_width, 0), split, config, 0)
    assert not torch.all(learned.posterior_log_std == start)
    assert not torch.all(learned.prior_log_std == start)


def test_a_seed_gives_the_same_run_twice_and_restores_the_thread_count(split: DigitsSplit) -> None:
    config = dataclasses.replace(SMALL, epochs=1)
    threads = torch.get_num_threads()
    runs = [train_pac_bayes(build_network("cnn", 10, 64, 4), split, config, 4) for _ in range(2)]
    assert runs[0].report == runs[1].report
    assert all(torch.equal(runs[0].weights[name], runs[1].weights[name]) for name in runs[0].weights)
    assert torch.get_num_threads() == threads


def test_adam_grid_records_every_cell_and_retrains_the_best(split: DigitsSplit) -> None:
    config = dataclasses.replace(
        SMALL, epochs=5, adam_learning_rates=(1e-4, 1e-2), adam_weight_decays=(0.0, 1e-3), validation_fraction=0.2
    )
    run = adam_grid_search(lambda: build_network("mlp", 10, 64, 0), split, config, 0)
    assert [(cell.learning_rate, cell.weight_decay) for cell in run.grid] == [
        (1e-4, 0.0),
        (1e-4, 1e-3),
        (1e-2, 0.0),
        (1e-2, 1e-3),
    ]
    best = max(cell.validation_accuracy for cell in run.grid)
    assert run.chosen in run.grid and run.chosen.validation_accuracy == best
    assert run.chosen.learning_rate == 1e-2  # 5 epochs at 1e-4 barely move a network from its initialisation
    assert run.test_accuracy > 5 * CHANCE
    assert all(0 <= cell.test_accuracy <= 1 and cell.validation_loss > 0 for cell in run.grid)


def test_validation_split_too_small_for_every_class_is_one_line(split: DigitsSplit) -> None:
    config = dataclasses.replace(SMALL, validation_fraction=0.01, epochs=1)
    with pytest.raises(PACTrainError, match=r"validation_fraction = 0.01 of 300 training digits leaves 3"):
        adam_grid_search(lambda: build_network("mlp", 10, 64, 0), split, config, 0)
