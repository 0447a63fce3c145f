"""Suites: each benchmark item with its choices and each model's pick, and each suite's scores with intervals."""

import streamlit as st

from nexa_ui import charts, view
from nexa_ui import queries as q

part = view.header("suites")

with view.shown():
    found = q.suites(part)
    st.dataframe(found, hide_index=True)
    suite = st.selectbox("Suite", found["suite"].to_list(), key="suite")
    st.subheader(f"{suite}: each item and each model's pick")
    view.paged(q.suite_items(part, suite), "items_page")

    checkpoint = found["checkpoint_id"][0]
    scores = q.suite_scores(part, checkpoint)
    st.subheader("Per suite, with 95% intervals")
    if scores.is_empty():
        st.info(f"benchmark_history has no scores of checkpoint {checkpoint}: materialize benchmark_scores.")
    for metric in scores["metric"].unique().sort():
        chosen = scores.filter(scores["metric"] == metric)
        st.altair_chart(charts.intervals(chosen, "suite", f"{metric} per suite (__all__: every suite)"))
    st.dataframe(scores, hide_index=True)
