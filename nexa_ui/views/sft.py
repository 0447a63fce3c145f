"""SFT set: rows by split, topic and source document; the rows a feedback set added, and why."""

import polars as pl
import streamlit as st

from nexa_ui import queries as q
from nexa_ui import view

part = view.header("sft")

with view.shown():
    counts = q.sft_counts(part)
    st.subheader(f"Examples by split and topic (SFT round {', '.join(map(str, counts['round'].unique().sort()))})")
    splits = counts.group_by("split").agg(pl.col("examples").sum()).sort("split")
    for cell, (split, examples) in zip(st.columns(splits.height), splits.iter_rows()):
        cell.metric(split, examples)
    st.dataframe(counts, hide_index=True)
    st.subheader("By source document")
    view.paged(q.sft_documents(part), "documents_page")

with view.shown():
    st.subheader("Rows a feedback set added")
    added = q.feedback_rows(part)
    if q.count(added) == 0:
        st.info("This SFT set has no feedback rows: it was made from the corpus alone (round 0).")
    else:
        view.paged(added, "feedback_rows_page")

with view.shown():
    st.subheader("The feedback set")
    view.paged(q.feedback_set(part), "feedback_set_page")
