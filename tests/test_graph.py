"""The distillation graph materialized with dagster.materialize into a temporary Delta root."""

import json

import dagster as dg
import polars as pl
from conftest import server_calls
from graph_helpers import materialize_domain, read_table

from resources.teacher import TeacherResource

TABLES = (
    "raw_documents",
    "raw_quarantine",
    "teacher_inputs",
    "teacher_outputs",
    "filtered_pairs",
    "sft_dataset",
    "restatements",
)


def check_results(result):
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def materialization(result, key: str):
    return next(
        m
        for m in result.asset_materializations_for_node(
            "raw_documents" if key in ("raw_documents", "raw_quarantine") else key
        )
        if m.asset_key == dg.AssetKey(key)
    )


def test_whole_graph_for_one_partition(instance, raw_root, delta_root):
    result = materialize_domain(instance, "physics", raw_root, delta_root)
    assert result.success
    assert check_results(result) == {f"{t}_quality": True for t in TABLES if t != "raw_quarantine"}

    docs, _ = read_table(delta_root, "raw_documents")
    inputs, _ = read_table(delta_root, "teacher_inputs")
    outputs, _ = read_table(delta_root, "teacher_outputs")
    pairs, _ = read_table(delta_root, "filtered_pairs")
    sft, version = read_table(delta_root, "sft_dataset")
    assert docs.height >= 10 and docs["topic"].n_unique() >= 5 and (docs["domain"] == "physics").all()
    assert inputs.height >= 40 and set(inputs["request_id"]) == set(outputs["request_id"])
    kept = pairs.filter(pl.col("reject_reason").is_null())
    assert kept.height >= 100
    assert sft.height == kept.height and set(sft["split"]) == {"train", "validation", "test"}
    assert sft.group_by("doc_id").agg(pl.col("split").n_unique()).filter(pl.col("split") > 1).is_empty()

    meta = materialization(result, "sft_dataset").metadata
    assert meta["dagster/row_count"].value == sft.height and meta["delta_version"].value == version
    assert meta["input_version/filtered_pairs"].value == read_table(delta_root, "filtered_pairs")[1]  # what it read
    assert "| domain |" in meta["preview"].value
    assert [c.name for c in meta["dagster/column_schema"].schema.columns][:3] == ["domain", "example_id", "pair_id"]
    pair_meta = materialization(result, "filtered_pairs").metadata
    assert pair_meta["kept"].value == kept.height
    assert sum(v.value for k, v in pair_meta.items() if k.startswith("dropped/")) == pairs.height - kept.height
    assert materialization(result, "teacher_inputs").metadata["template_sha256"].value == inputs["template_hash"][0]


def test_malformed_file_is_quarantined_and_the_rest_lands(instance, raw_root, delta_root):
    (raw_root / "chemistry" / "broken.jsonl").write_text(
        json.dumps({"topic": "x", "text": "A valid record about catalysts and reaction rates."}) + "\n{oops\n"
    )
    (raw_root / "chemistry" / "binary.md").write_bytes(b"\xff\xfe\xfa garbage")
    result = materialize_domain(instance, "chemistry", raw_root, delta_root)
    assert result.success
    quarantine, _ = read_table(delta_root, "raw_quarantine")
    assert {(r["source_path"], r["source_row"], r["reason"]) for r in quarantine.iter_rows(named=True)} == {
        ("chemistry/broken.jsonl", 2, "undecodable"),
        ("chemistry/binary.md", None, "undecodable"),
    }
    docs, _ = read_table(delta_root, "raw_documents")
    assert "chemistry/broken.jsonl" in docs["source_path"].to_list() and docs.height >= 10
    assert materialization(result, "raw_documents").metadata["quarantined"].value == 2


def test_rematerializing_one_domain_leaves_the_other_intact(instance, raw_root, delta_root):
    assert materialize_domain(instance, "physics", raw_root, delta_root).success
    assert materialize_domain(instance, "biology", raw_root, delta_root).success
    before = {
        t: read_table(delta_root, t)[0].filter(pl.col("domain") == "physics").sort(pl.all())
        for t in ("raw_documents", "teacher_inputs", "filtered_pairs")
    }
    bio_rows = read_table(delta_root, "sft_dataset")[0].filter(pl.col("domain") == "biology").height
    # Change biology's input so its rewrite really differs.
    extra = raw_root / "biology" / "extra.txt"
    extra.write_text("A ribosome is a molecular machine that builds proteins from amino acids.\n")
    assert materialize_domain(instance, "biology", raw_root, delta_root).success
    for table, frame in before.items():
        after = read_table(delta_root, table)[0].filter(pl.col("domain") == "physics").sort(pl.all())
        assert after.equals(frame), table
    sft, _ = read_table(delta_root, "sft_dataset")
    assert sft.filter(pl.col("domain") == "physics").height > 0
    assert sft.filter(pl.col("domain") == "biology").height >= bio_rows


def test_openai_backend_against_a_real_server_and_cache(instance, raw_root, delta_root, teacher_server, monkeypatch):
    base = teacher_server()
    monkeypatch.setenv("NEXA_TEST_TEACHER_KEY", "sk-test-secret-value")
    teacher = TeacherResource(
        backend="openai",
        base_url=f"{base}/v1",
        model="test-teacher",
        max_concurrency=8,
        api_key=dg.EnvVar("NEXA_TEST_TEACHER_KEY"),
        prices={"test-teacher": {"input": 1.0, "output": 2.0}},
    )
    first = materialize_domain(instance, "physics", raw_root, delta_root, teacher=teacher)
    assert first.success
    inputs, _ = read_table(delta_root, "teacher_inputs")
    calls = server_calls(base)
    assert calls == inputs.height + inputs["passage_id"].n_unique()  # the pairs, and each passage's restatements
    outputs, _ = read_table(delta_root, "teacher_outputs")
    assert (outputs["backend"] == "openai").all() and (outputs["cost_usd"] > 0).all()
    meta = materialization(first, "teacher_outputs").metadata
    assert meta["new_calls"].value == inputs.height and meta["total_cost_usd"].value > 0
    second = materialize_domain(instance, "physics", raw_root, delta_root, teacher=teacher)
    assert second.success and server_calls(base) == calls
    assert materialization(second, "teacher_outputs").metadata["new_calls"].value == 0
    pairs, _ = read_table(delta_root, "filtered_pairs")
    assert pairs.filter(pl.col("reject_reason").is_null()).height >= 100
    # The key reaches the server but no table or event metadata.
    for table in ("teacher_outputs", "teacher_cache", "filtered_pairs"):
        frame, _ = read_table(delta_root, table)
        assert "sk-test-secret-value" not in frame.write_csv()
    records = instance.get_event_records(dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_MATERIALIZATION))
    assert records and all("sk-test-secret-value" not in str(r.event_log_entry) for r in records)


def test_unparseable_teacher_responses_name_partition_and_file(instance, raw_root, delta_root, teacher_server):
    base = teacher_server("--garbage")
    teacher = TeacherResource(backend="openai", base_url=f"{base}/v1", model="garbage-teacher", api_key="local")
    result = materialize_domain(instance, "physics", raw_root, delta_root, teacher=teacher, raise_on_error=False)
    # Prose instead of JSON is billed but unusable: retried once (the default rule), then quarantined.
    inputs, _ = read_table(delta_root, "teacher_inputs")
    assert server_calls(base) == 2 * (inputs.height + inputs["passage_id"].n_unique())  # pairs and restatements
    outputs, _ = read_table(delta_root, "teacher_outputs")
    assert (outputs["unusable_reason"] == "malformed_json").all() and (outputs["attempts"] == 2).all()
    pairs, _ = read_table(delta_root, "filtered_pairs")
    assert (pairs["reject_reason"] == "unusable_response").all()
    assert pairs["reject_detail"].str.contains("partition physics").all()
    assert pairs["reject_detail"].str.contains(r"from physics/").all()
    # No kept pair: the SFT set is empty and its blocking check fails, so the run fails.
    assert not result.success
    assert check_results(result)["sft_dataset_quality"] is False


def test_missing_domain_folder_fails_with_a_clear_error(instance, raw_root, delta_root):
    result = materialize_domain(instance, "geology", raw_root, delta_root, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "partition 'geology'" in str(failure.step_failure_data.error) and "does not exist" in str(
        failure.step_failure_data.error
    )
