"""Data quality suites, run with Great Expectations 1.x on an ephemeral context.

One suite per table. Each expectation is named for what it protects (schema, ids, lengths, roles,
leakage, duplicate and refusal rates); the result lists every expectation with its outcome so the
Dagster check shows which one failed and on how many rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import polars as pl

from nexa_core import schemas


@dataclass(frozen=True)
class Thresholds:
    max_duplicate_rate: float = 0.5  # share of parsed pairs dropped as exact or near duplicates
    max_refusal_rate: float = 0.05  # share of parsed pairs that are refusals or boilerplate
    max_message_chars: int = 4000
    min_doc_chars: int = 20


@dataclass
class SuiteResult:
    suite: str
    passed: bool
    rows: int
    outcomes: dict[str, dict] = field(default_factory=dict)

    def failures(self) -> list[str]:
        return [name for name, o in self.outcomes.items() if not o["success"]]

    def describe(self) -> str:
        failed = self.failures()
        return "all expectations met" if not failed else "failed: " + ", ".join(failed)


def _run(suite_name: str, frame: pl.DataFrame, expectations: dict[str, object]) -> SuiteResult:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx  # heavy import: only when a check runs
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (
        context.data_sources.add_pandas("nexa")
        .add_dataframe_asset(suite_name)
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": frame.to_pandas()})
    )
    outcomes = {}
    for name, expectation in expectations.items():
        result = batch.validate(expectation)
        detail = result.result or {}
        outcomes[name] = {
            "success": bool(result.success),
            "unexpected_count": detail.get("unexpected_count"),
            "observed_value": _plain(detail.get("observed_value")),
            "partial_unexpected_list": _plain(detail.get("partial_unexpected_list", [])[:5]),
        }
    return SuiteResult(
        suite=suite_name, passed=all(o["success"] for o in outcomes.values()), rows=frame.height, outcomes=outcomes
    )


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _schema(columns: dict):
    import great_expectations as gx

    return gx.expectations.ExpectTableColumnsToMatchOrderedList(column_list=list(columns))


def _base(schema: dict, id_column: str) -> dict:
    import great_expectations as gx

    e = gx.expectations
    return {
        "schema": _schema(schema),
        "ids_not_null": e.ExpectColumnValuesToNotBeNull(column=id_column),
        "ids_unique": e.ExpectColumnValuesToBeUnique(column=id_column),
        "domain_not_null": e.ExpectColumnValuesToNotBeNull(column="domain"),
    }


def raw_documents_suite(frame: pl.DataFrame, t: Thresholds = Thresholds()) -> SuiteResult:
    import great_expectations as gx

    e = gx.expectations
    checks = _base(schemas.RAW_DOCUMENTS, "doc_id")
    checks["text_length"] = e.ExpectColumnValueLengthsToBeBetween(column="text", min_value=t.min_doc_chars)
    checks["source_path_not_null"] = e.ExpectColumnValuesToNotBeNull(column="source_path")
    return _run("raw_documents", frame, checks)


def teacher_inputs_suite(frame: pl.DataFrame, t: Thresholds = Thresholds()) -> SuiteResult:
    import great_expectations as gx

    e = gx.expectations
    checks = _base(schemas.TEACHER_INPUTS, "request_id")
    checks["passage_length"] = e.ExpectColumnValueLengthsToBeBetween(
        column="passage", min_value=1, max_value=t.max_message_chars
    )
    checks["template_hash_not_null"] = e.ExpectColumnValuesToNotBeNull(column="template_hash")
    return _run("teacher_inputs", frame, checks)


def teacher_outputs_suite(frame: pl.DataFrame, t: Thresholds = Thresholds()) -> SuiteResult:
    import great_expectations as gx

    e = gx.expectations
    checks = _base(schemas.TEACHER_OUTPUTS, "request_id")
    checks["response_not_null"] = e.ExpectColumnValuesToNotBeNull(column="response")
    checks["tokens_non_negative"] = e.ExpectColumnValuesToBeBetween(column="completion_tokens", min_value=0)
    return _run("teacher_outputs", frame, checks)


def filtered_pairs_suite(frame: pl.DataFrame, t: Thresholds = Thresholds()) -> SuiteResult:
    import great_expectations as gx

    e = gx.expectations
    parsed = frame.filter(
        ~pl.col("reject_reason").is_in(["unparseable_response", "unusable_response"])
        | pl.col("reject_reason").is_null()
    )
    n = max(parsed.height, 1)
    rates = pl.DataFrame(
        {
            "duplicate_rate": [parsed["reject_reason"].is_in(["exact_duplicate", "near_duplicate"]).sum() / n],
            "refusal_rate": [(parsed["reject_reason"] == "refusal").sum() / n],
        }
    )
    checks = _base(schemas.FILTERED_PAIRS, "pair_id")
    result = _run("filtered_pairs", frame, checks)
    kept = frame.filter(pl.col("reject_reason").is_null())
    rate_result = _run(
        "filtered_pairs_kept",
        kept.select("question", "answer"),
        {
            "kept_question_length": e.ExpectColumnValueLengthsToBeBetween(
                column="question", min_value=1, max_value=t.max_message_chars
            ),
            "kept_answer_length": e.ExpectColumnValueLengthsToBeBetween(
                column="answer", min_value=1, max_value=t.max_message_chars
            ),
        },
    )
    result.outcomes.update(rate_result.outcomes)
    result.passed = result.passed and rate_result.passed
    rate_result = _run(
        "filtered_pairs_rates",
        rates,
        {
            "duplicate_rate": e.ExpectColumnMaxToBeBetween(column="duplicate_rate", max_value=t.max_duplicate_rate),
            "refusal_rate": e.ExpectColumnMaxToBeBetween(column="refusal_rate", max_value=t.max_refusal_rate),
        },
    )
    result.outcomes.update(rate_result.outcomes)
    result.passed = result.passed and rate_result.passed
    return result


def sft_dataset_suite(frame: pl.DataFrame, t: Thresholds = Thresholds()) -> SuiteResult:
    import great_expectations as gx

    e = gx.expectations
    flat = frame.drop("messages")
    checks = _base({k: v for k, v in schemas.SFT_DATASET.items() if k != "messages"}, "example_id")
    checks["split_values"] = e.ExpectColumnValuesToBeInSet(column="split", value_set=list(schemas.SFT_SPLITS))
    checks["not_empty"] = e.ExpectTableRowCountToBeBetween(min_value=1)
    checks["has_train_split"] = e.ExpectColumnDistinctValuesToContainSet(column="split", value_set=["train"])
    result = _run("sft_dataset", flat, checks)
    messages = frame.select("example_id", "messages").explode("messages").unnest("messages")
    turns = frame.select(
        "example_id", pl.col("messages").list.eval(pl.element().struct.field("role")).list.join(",").alias("roles")
    )
    splits_per_doc = frame.group_by("doc_id").agg(pl.col("split").n_unique().alias("splits"))
    for name, sub, exps in (
        (
            "sft_messages",
            messages,
            {
                "allowed_roles": e.ExpectColumnValuesToBeInSet(column="role", value_set=list(schemas.MESSAGE_ROLES)),
                "message_length": e.ExpectColumnValueLengthsToBeBetween(
                    column="content", min_value=1, max_value=t.max_message_chars
                ),
            },
        ),
        (
            "sft_turns",
            turns,
            {"turn_order": e.ExpectColumnValuesToBeInSet(column="roles", value_set=["system,user,assistant"])},
        ),
        (
            "sft_leakage",
            splits_per_doc,
            {"no_split_leakage": e.ExpectColumnValuesToBeBetween(column="splits", max_value=1)},
        ),
    ):
        extra = _run(name, sub, exps)
        result.outcomes.update(extra.outcomes)
        result.passed = result.passed and extra.passed
    return result


def restatements_suite(frame: pl.DataFrame, t: Thresholds = Thresholds()) -> SuiteResult:
    import great_expectations as gx

    e = gx.expectations
    checks = _base(schemas.RESTATEMENTS, "restatement_id")
    checks["passage_id_not_null"] = e.ExpectColumnValuesToNotBeNull(column="passage_id")
    checks["template_hash_not_null"] = e.ExpectColumnValuesToNotBeNull(column="template_hash")
    result = _run("restatements", frame, checks)
    kept = _run(
        "restatements_kept",
        frame.filter(pl.col("reject_reason").is_null()).select("text"),
        {"kept_text_length": e.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1)},
    )
    result.outcomes.update(kept.outcomes)
    result.passed = result.passed and kept.passed
    return result


SUITES = {
    "raw_documents": raw_documents_suite,
    "teacher_inputs": teacher_inputs_suite,
    "teacher_outputs": teacher_outputs_suite,
    "filtered_pairs": filtered_pairs_suite,
    "sft_dataset": sft_dataset_suite,
    "restatements": restatements_suite,
}
