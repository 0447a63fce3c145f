"""Answers: each test item's question and gold answer beside the student's, the model's after reading and the
base's, with token F1 and contains; the misses; per-topic scores with 95% intervals."""

import streamlit as st

from nexa_ui import charts, view
from nexa_ui import queries as q

part = view.header("answers")

with view.shown():
    evaluated = q.evaluation(part)
    st.markdown(
        f"Checkpoint `{evaluated['checkpoint_id']}` · round {evaluated['round']} · SFT set v{evaluated['sft_version']}"
        f" · {evaluated['items']} test items · models: {', '.join(evaluated['roles'])}"
    )
    left, right = st.columns(2)
    shown = left.radio("Show", list(q.ANSWER_VIEWS), format_func=q.ANSWER_VIEWS.get, key="answers_view")
    topics = q.answer_topics(part)
    topic = right.selectbox(
        "Topic", [None, *topics], format_func=lambda x: "every topic" if x is None else x, key="answers_topic"
    )
    st.caption(
        "student: the fine-tuned checkpoint; read: the model after reading the domain's documents, before SFT; "
        "base: the off-the-shelf model. _f1: token F1; _contains: 1 when the answer holds the gold answer."
    )
    view.paged(q.answers(part, shown, topic), "answers_page")

    st.subheader("Per topic, with 95% intervals")
    metrics = q.eval_metrics_names(part, evaluated["checkpoint_id"])
    if metrics:
        default = metrics.index("token_f1") if "token_f1" in metrics else 0
        metric = st.selectbox("Metric", metrics, index=default, key="answers_metric")
        scores = q.topic_scores(part, evaluated["checkpoint_id"], metric)
        st.altair_chart(charts.intervals(scores, "topic", f"{metric} per topic (__all__: the whole test split)"))
        st.dataframe(scores, hide_index=True)
    else:
        st.info(f"eval_history has no scores of checkpoint {evaluated['checkpoint_id']}: materialize eval_metrics.")
