"""The app's charts (Altair, which Streamlit draws): means with their 95% intervals, one colour per model role."""

from __future__ import annotations

import altair as alt
import polars as pl

from nexa_core.evaluate.leaderboard import ROLE_COLOURS
from nexa_ui.queries import ROLE_ORDER

# the leaderboard report's colours for the student and the base, and one for each other role
COLOURS = {**ROLE_COLOURS, "read": "#ff7f0e", "teacher": "#2ca02c", "pruned_sft": "#9467bd"}


def intervals(frame: pl.DataFrame, along: str, title: str) -> alt.LayerChart:
    """A point at each `mean` and a bar from `ci_low` to `ci_high`, per value of `along` (a topic, a round, a
    suite), the roles side by side."""
    roles = [r for r in ROLE_ORDER if r in frame["model_role"]] + sorted(set(frame["model_role"]) - set(ROLE_ORDER))
    scale = alt.Scale(domain=roles, range=[COLOURS.get(r, "#7f7f7f") for r in roles])
    role = alt.Color("model_role:N", title="model", sort=roles, scale=scale)
    base = alt.Chart(frame, title=title).encode(
        x=alt.X(f"{along}:N", title=along, sort=None, axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("model_role:N", sort=roles),
        color=role,
        tooltip=[along, "model_role", "mean", "ci_low", "ci_high", "n"],
    )
    points = base.mark_point(filled=True, size=70).encode(y=alt.Y("mean:Q", title="mean (95% interval)"))
    bars = base.mark_rule(strokeWidth=2).encode(y="ci_low:Q", y2="ci_high:Q")
    return alt.layer(bars, points)
