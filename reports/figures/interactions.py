"""Component interactions of the instruction x CoT x feedback design, on behaviour and morality."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reports.escaping import plotly_text
from reports.figures.round_series import interval_error_bars, interval_text
from reports.figures.style import row_spacing
from workbench.metrics.statistics import EFFECTS  # main effects first, then interaction contrasts
from workbench.run_tables import InteractionEffect

BEHAVIOUR_COLOUR = "#1f77b4"
HIDDEN_STATE_COLOUR = "#d62728"


def interactions_figure(
    behaviour_effects: Sequence[InteractionEffect],
    hidden_state_effects: Sequence[InteractionEffect] = (),
) -> go.Figure:
    """Main effects and interaction contrasts with 95% intervals, one subplot row per outcome.

    ``behaviour_effects`` come from ``results/interactions.csv`` and ``hidden_state_effects``
    from ``probes/interactions.csv``; each point is an effect's estimate (x, in the outcome's
    unit) with its interval; the dotted line marks zero (no effect).
    """
    panels = [
        (source, outcome, colour, [e for e in effects if e.outcome == outcome])
        for source, colour, effects in (
            ("behaviour", BEHAVIOUR_COLOUR, behaviour_effects),
            ("hidden state", HIDDEN_STATE_COLOUR, hidden_state_effects),
        )
        for outcome in dict.fromkeys(e.outcome for e in effects)
    ]
    if not panels:
        raise ValueError("both interaction tables are empty")
    height = 260 * len(panels) + 120
    fig = make_subplots(
        rows=len(panels),
        cols=1,
        vertical_spacing=row_spacing(height),
        subplot_titles=[f"{source}: {plotly_text(outcome)}" for source, outcome, _, _ in panels],
    )
    shown_sources: set[str] = set()
    for row, (source, outcome, colour, effects) in enumerate(panels, start=1):
        effects = sorted(effects, key=_effect_rank)
        fig.add_trace(
            go.Scatter(
                x=[e.estimate for e in effects],
                y=[plotly_text(e.effect) for e in effects],
                mode="markers",
                marker={"color": colour, "size": 10},
                error_x=interval_error_bars(
                    [e.estimate for e in effects], [e.ci_low for e in effects], [e.ci_high for e in effects]
                ),
                name=source,
                legendgroup=source,
                showlegend=source not in shown_sources,
                hovertext=[
                    f"{source}: {plotly_text(outcome)}<br>{plotly_text(e.effect)}: "
                    f"{e.estimate:.3g}{interval_text(e.ci_low, e.ci_high)}"
                    for e in effects
                ],
                hoverinfo="text",
            ),
            row=row,
            col=1,
        )
        shown_sources.add(source)
        fig.add_vline(x=0, line={"dash": "dot", "color": "grey"}, row=row, col=1)
        fig.update_yaxes(autorange="reversed", row=row, col=1)
        fig.update_xaxes(title_text=f"effect on {plotly_text(outcome)}", row=row, col=1)
    fig.update_layout(height=height, title="Main effects and interaction contrasts")
    return fig


def _effect_rank(effect: InteractionEffect) -> tuple[int, str]:
    if effect.effect in EFFECTS:
        return EFFECTS.index(effect.effect), effect.effect
    return len(EFFECTS), effect.effect
