"""Teacher and filters: the pairs per verdict, a passage with the request the teacher got and its response, and
the pairs parsed from it with each filter's verdict."""

import json

import polars as pl
import streamlit as st

from nexa_ui import queries as q
from nexa_ui import view

part = view.header("teacher")

with view.shown():
    totals = q.teacher_totals(part)
    cells = st.columns(5)
    cells[0].metric("responses", totals["responses"])
    cells[1].metric("cache hits", totals["cache_hits"])
    cells[2].metric("prompt tokens", totals["prompt_tokens"])
    cells[3].metric("completion tokens", totals["completion_tokens"])
    cells[4].metric("cost (USD)", f"{totals['cost_usd'] or 0:.4f}")

with view.shown():
    st.subheader("Pairs per verdict")
    verdicts = q.reason_counts(part)
    left, right = st.columns(2)
    left.dataframe(verdicts, hide_index=True)
    right.bar_chart(verdicts, x="verdict", y="pairs", horizontal=True, sort=False)
    verdict = st.selectbox("The pairs with the verdict", verdicts["verdict"].to_list(), key="verdict")
    view.paged(q.pairs_with(part, verdict), "verdict_page")

with view.shown():
    st.subheader("One request")
    page = view.paged(q.teacher_requests(part), "requests_page")
    request_id = st.selectbox("Request", page.rows["request_id"].to_list(), key="request")
    if request_id:
        request, response = q.teacher_request(part, request_id)
        st.markdown(
            f"Prompt `{request['template_name']}` (sha256 `{request['template_hash'][:12]}`) · topic "
            f"`{request['topic']}` · `{request['source_path']}` · document `{request['doc_id']}`"
            + (
                f" · from the round-{request['feedback_round']} feedback set"
                if request["feedback_round"] is not None
                else ""
            )
        )
        passage, answer = st.columns(2)
        passage.markdown("**Passage**")
        passage.text(request["passage"])
        with passage.expander("The messages sent"):
            st.json(json.loads(request["messages"]))
        answer.markdown("**Response**")
        if response is None:
            answer.info("Not answered yet: materialize teacher_outputs.")
        else:
            answer.text(response["response"] or "")
            numbers = {
                "model": response["model"],
                "backend": response["backend"],
                "prompt tokens": response["prompt_tokens"],
                "completion tokens": response["completion_tokens"],
                "cost (USD)": response["cost_usd"],
                "cache hit": response["from_cache"],
                "latency (s)": response["latency_s"],
                "attempts": response["attempts"],
                "finish": response["finish_reason"],
                "unusable": response["unusable_reason"],
            }
            answer.dataframe(
                pl.DataFrame({"": list(numbers), "value": [str(v) for v in numbers.values()]}), hide_index=True
            )
        st.markdown("**Its pairs**, with each filter's verdict in the filters' order (`-`: never reached)")
        st.dataframe(q.request_pairs(part, request_id), hide_index=True)
