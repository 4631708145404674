"""PAC-Bayes training from scratch (arXiv 2305.19243) against Adam under a grid search.

A network starts from random weights w0; training minimises a PAC-Bayes bound for the unbounded
cross-entropy over the posterior mean w, the posterior noise scales p and the prior scales b of a
Gaussian prior centred on w0, with no weight decay and no dropout. ``docs/pactrain.md`` describes
the method, the bound's terms and their sources.

    from workbench.pactrain import PACTrainConfig, run_experiment, summarize
    results = run_experiment(PACTrainConfig(seeds=(0, 1, 2)))
    rows = summarize(results)
"""

from workbench.pactrain.baseline import AdamGridRun, GridCell, adam_grid_search, train_adam
from workbench.pactrain.bound import BoundReport, estimate_k_curve, posterior_prior_kl, require_non_vacuous
from workbench.pactrain.config import METHODS, NETWORKS, BoundSettings, PACTrainConfig, PACTrainError
from workbench.pactrain.data import DigitsSplit, digits_split
from workbench.pactrain.experiment import (
    ExperimentResults,
    GridRecord,
    RunRecord,
    SummaryRow,
    require_non_vacuous_runs,
    run_experiment,
    summarize,
)
from workbench.pactrain.networks import DigitsCNN, DigitsMLP, build_network
from workbench.pactrain.training import PACBayesRun, train_pac_bayes

__all__ = [
    "METHODS",
    "NETWORKS",
    "AdamGridRun",
    "BoundReport",
    "BoundSettings",
    "DigitsCNN",
    "DigitsMLP",
    "DigitsSplit",
    "ExperimentResults",
    "GridCell",
    "GridRecord",
    "PACBayesRun",
    "PACTrainConfig",
    "PACTrainError",
    "RunRecord",
    "SummaryRow",
    "adam_grid_search",
    "build_network",
    "digits_split",
    "estimate_k_curve",
    "posterior_prior_kl",
    "require_non_vacuous",
    "require_non_vacuous_runs",
    "run_experiment",
    "summarize",
    "train_adam",
    "train_pac_bayes",
]
