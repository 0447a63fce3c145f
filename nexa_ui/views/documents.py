"""Documents: per source file and topic, the quarantine with its reasons, and one document in full."""

import streamlit as st

from nexa_ui import queries as q
from nexa_ui import view

part = view.header("documents")

with view.shown():
    counts = q.document_counts(part)
    left, middle, right = st.columns(3)
    left.metric("documents", int(counts["documents"].sum()))
    middle.metric("source files", counts["source_path"].n_unique())
    right.metric("topics", counts["topic"].n_unique())
    st.subheader("By source file and topic")
    st.dataframe(counts, hide_index=True)

with view.shown():
    st.subheader("Quarantine")
    reasons = q.quarantine_reasons(part)
    if reasons.is_empty():
        st.success(f"Nothing of {part.domain}'s raw folder was quarantined.")
    else:
        st.dataframe(reasons, hide_index=True)
        view.paged(q.quarantine(part), "quarantine_page")

with view.shown():
    st.subheader("One document")
    page = view.paged(q.document_list(part), "documents_page")
    titles = dict(zip(page.rows["doc_id"], page.rows["title"]))
    doc_id = st.selectbox(
        "Document", list(titles), format_func=lambda d: f"{titles[d] or '(untitled)'} ({d})", key="document"
    )
    if doc_id:
        doc = q.document(part, doc_id)
        st.markdown(
            f"**{doc['title'] or '(untitled)'}** · topic `{doc['topic']}` · `{doc['source_path']}` row "
            f"{doc['source_row']} · {doc['n_chars']} characters · id `{doc['doc_id']}`"
        )
        st.text(doc["text"])
