"""Plotly figures of a run's tidy tables; each function takes typed rows and returns a Figure."""

from __future__ import annotations

from reports.figures.answers import item_answers_figure
from reports.figures.attribution import bias_levels_figure, head_attribution_figure, selected_heads_figure
from reports.figures.categories import bbq_categories_figure
from reports.figures.concept import concept_uncertainty_figure, least_squares_line
from reports.figures.convergence import answer_flips_figure, convergence_figure
from reports.figures.interactions import interactions_figure
from reports.figures.morality import layer_profile_figure, morality_figure
from reports.figures.paired import paired_tests_figure
from reports.figures.steering import steering_figure
from reports.figures.uncertainty import reliability_figure, uncertainty_figure

__all__ = [
    "answer_flips_figure",
    "bbq_categories_figure",
    "bias_levels_figure",
    "concept_uncertainty_figure",
    "convergence_figure",
    "head_attribution_figure",
    "interactions_figure",
    "item_answers_figure",
    "layer_profile_figure",
    "least_squares_line",
    "morality_figure",
    "paired_tests_figure",
    "reliability_figure",
    "selected_heads_figure",
    "steering_figure",
    "uncertainty_figure",
]
