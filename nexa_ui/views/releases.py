"""Releases and leaderboard: the domain's scores by round with intervals, the leaderboard, each release with the
gate's decision, its model card and the SFT rows it was trained on."""

import streamlit as st

from nexa_ui import charts, view
from nexa_ui import queries as q

part = view.header("releases")

with view.shown():
    st.subheader("Scores by round, with 95% intervals")
    metrics = q.history_metrics(part)
    metric = st.selectbox("Test split metric", metrics, index=metrics.index("token_f1") if "token_f1" in metrics else 0)
    by_round = q.scores_by_round(part, metric)
    for score in by_round["score"].unique().sort():
        chosen = by_round.filter(by_round["score"] == score)
        st.altair_chart(charts.intervals(chosen, "round", f"{score} by round"))

with view.shown():
    st.subheader("Leaderboard (every domain)")
    st.dataframe(q.leaderboard(part), hide_index=True)

with view.shown():
    st.subheader("Releases")
    made = q.releases(part)
    st.dataframe(made, hide_index=True)
    names = {
        r["release_id"]: f"{r['served_model']} ({r['released_at']:%Y-%m-%d %H:%M})" for r in made.iter_rows(named=True)
    }
    release_id = st.selectbox("Release", list(names), format_func=names.get, key="release")
    record = q.release(part, release_id)
    gate, card = st.columns(2)
    gate.markdown(
        f"**The gate's decision**: promoted on `{record['gate'].get('metric')}` ({record['gate'].get('rule')})"
    )
    for reason in record["gate"].get("reasons", []):
        gate.markdown(f"- {reason}")
    with gate.expander("The gate's numbers"):
        st.json(record["gate"])
    with gate.expander("Lineage: the Delta versions it was made from"):
        st.json(record["lineage"])
    card.markdown("**Model card**")
    card.container(border=True, height=420).markdown(record["model_card"] or "(no model card)")
    split = st.radio("Trained on: the split", ["train", "validation", "test"], horizontal=True, key="release_split")
    st.caption(f"sft_dataset v{record['sft_version']} (Delta time travel), domain {part.domain}, split {split}")
    view.paged(q.release_rows(part, record, split), "release_rows_page")
