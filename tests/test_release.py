"""model_release on real materializations (physics, a small student, a few steps): the default gate
refuses (no sample-domain student beats its base with non-overlapping intervals) and says why with the
numbers; a configured threshold flips the decision exactly at the measured lift; a promotion merges,
registers (`champion`), writes the model card with every version that made it; a second checkpoint is
judged against the champion; nexa-release-rows prints each release's own SFT rows by time travel; a LoRA
checkpoint of a pretrained base merges into it and is registered with its local base by reference."""

import json
import os
import subprocess
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from conftest import PROJECT
from graph_helpers import DISTILL_ASSETS
from release_helpers import (
    EVAL_GRAPH,
    SFT,
    candidate_scores,
    check_of,
    copy_tables,
    eval_run_config,
    graph_resources,
    materialize_release,
    passing_gate,
    read,
)

from nexa_assets import checks as quality
from nexa_core.artifacts import sha256_files
from nexa_core.release.gate import GateConfig, Score, promotion_gate
from resources.tracking import MlflowTracking

DOMAIN = "physics"


def tracking(root: Path) -> MlflowTracking:
    return graph_resources(root)["tracking"]


def registry(root: Path):
    import mlflow

    mlflow.set_tracking_uri(tracking(root).tracking_uri)
    return mlflow.MlflowClient()


def champion(root: Path) -> int | None:
    return tracking(root).champion_version(DOMAIN)


def materialized(result) -> bool:
    return bool(result.asset_materializations_for_node("model_release"))


@pytest.fixture(scope="module")
def first_release(evaluated_physics, tmp_path_factory):
    """On a copy of the evaluated tables: the default gate, a threshold above the measured lift, one
    just below it (promoted), and the same release again."""
    root = copy_tables(evaluated_physics["root"], tmp_path_factory.mktemp("release"))
    instance = evaluated_physics["instance"]
    checkpoint = read(root, "student_checkpoint").row(0, named=True)
    scores = candidate_scores(root, DOMAIN, checkpoint["checkpoint_id"])
    lift = scores["student"].mean - scores["base"].mean
    print(f"\n{DOMAIN} {scores['metric']}: student {scores['student']}, base {scores['base']}, lift {lift:+.4f}")
    out = {"root": root, "instance": instance, "checkpoint": checkpoint, "scores": scores}
    out["default"] = materialize_release(instance, root, DOMAIN)
    out["after_default"] = {"champion": champion(root), "table": (root / "delta" / "nexa" / "model_release").exists()}
    out["too_high"] = materialize_release(instance, root, DOMAIN, rule="mean", min_lift_over_base=lift + 0.01)
    out["promoted"] = materialize_release(instance, root, DOMAIN, **passing_gate(scores))
    out["again"] = materialize_release(instance, root, DOMAIN, **passing_gate(scores))
    return out


def test_default_gate_refuses_with_the_numbers_and_changes_nothing(first_release):
    result, scores = first_release["default"], first_release["scores"]
    assert not result.success and not materialized(result)
    check = check_of(result)
    assert not check.passed and check.blocking
    assert scores["metric"] == "benchmark_accuracy"  # physics ships benchmark suites
    description = check.description
    assert "partition physics" in description and "refused; the champion stays as it was" in description
    assert "rule intervals" in description and "intervals" in check.metadata["rule"].value
    for score in (scores["student"], scores["base"]):
        assert str(score) in description  # mean [ci_low, ci_high] (n)
    assert check.metadata["candidate/mean"].value == scores["student"].mean
    assert check.metadata["base/ci_high"].value == scores["base"].ci_high
    assert check.metadata["lift_over_base"].value == pytest.approx(scores["student"].ci_low - scores["base"].ci_high)
    assert first_release["after_default"] == {"champion": None, "table": False}


def test_threshold_above_the_measured_lift_refuses_and_below_it_promotes(first_release):
    too_high, promoted = first_release["too_high"], first_release["promoted"]
    assert not too_high.success and not check_of(too_high).passed
    assert "not above the threshold" in check_of(too_high).description
    assert promoted.success and check_of(promoted).passed and materialized(promoted)
    assert "promoted" in check_of(promoted).description and "no champion yet" in check_of(promoted).description


def test_promotion_merges_registers_and_records_the_release(first_release):
    root, checkpoint = first_release["root"], first_release["checkpoint"]
    row = read(root, "model_release").row(0, named=True)
    assert row["model_version"] == 1 and row["registered_model"] == "nexa-physics"
    assert row["served_model"] == "nexa-physics-v1" and row["previous_champion"] is None
    assert row["checkpoint_id"] == checkpoint["checkpoint_id"] and row["sft_version"] == checkpoint["sft_version"]
    merged = Path(row["merged_uri"])
    assert merged.is_relative_to(root / "artifacts" / DOMAIN)  # under the launcher's artifact root
    files = json.loads(row["files_sha256"])
    assert files == sha256_files(merged)
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja", "README.md"} <= set(files)
    # a full fine-tune merges to its own weights: the same tensors
    from safetensors.torch import load_file

    merged_weights = load_file(merged / "model.safetensors")
    trained = load_file(Path(checkpoint["artifact_uri"]) / "model.safetensors")
    assert set(merged_weights) == set(trained) and all((merged_weights[k] == trained[k]).all() for k in trained)
    client = registry(root)
    version = client.get_model_version_by_alias("nexa-physics", "champion")
    assert int(version.version) == 1 and version.description == row["model_card"]
    assert version.tags["merged_uri"] == row["merged_uri"]
    assert version.tags["checkpoint_id"] == checkpoint["checkpoint_id"]
    history = read(root, "release_history")
    assert history.height == 1 and history["release_id"].to_list() == [row["release_id"]]


def test_registered_champion_loads_from_the_registry(first_release):
    import mlflow
    import torch

    root = first_release["root"]
    registry(root)
    components = mlflow.transformers.load_model("models:/nexa-physics@champion", return_type="components")
    merged = Path(read(root, "model_release")["merged_uri"][0])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    expected = AutoModelForCausalLM.from_pretrained(merged).state_dict()
    loaded = components["model"].state_dict()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    assert components["tokenizer"].chat_template == AutoTokenizer.from_pretrained(merged).chat_template
    # logged by path (the merged folder copied, not loaded again) with the chat task: pyfunc answers chat requests
    flavor = mlflow.models.get_model_info("models:/nexa-physics@champion").flavors["transformers"]
    assert (flavor["task"], flavor["inference_task"]) == ("text-generation", "llm/v1/chat")
    assert flavor["instance_type"] == "TextGenerationPipeline" and flavor["source_model_name"].startswith(str(merged))
    chat = mlflow.pyfunc.load_model("models:/nexa-physics@champion").predict(
        {"messages": [{"role": "user", "content": "What is a photon?"}], "max_tokens": 4}
    )
    assert chat[0]["object"] == "chat.completion" and chat[0]["usage"]["completion_tokens"] > 0


def test_model_card_names_every_version_hash_config_metric_and_cost(first_release):
    root, checkpoint = first_release["root"], first_release["checkpoint"]
    row = read(root, "model_release").row(0, named=True)
    card = row["model_card"]
    assert (Path(row["merged_uri"]) / "README.md").read_text() == card
    meta = first_release["promoted"].asset_materializations_for_node("model_release")[0].metadata
    assert meta["model_card"].value == card and meta["mlflow_model_uri"].value == "models:/nexa-physics@champion"
    base = read(root, "student_base").row(0, named=True)
    assert f"Base model: {checkpoint['base_model']}" in card and base["model_uri"] in card
    lineage = {(r["table"], r["version"]): r for r in json.loads(row["lineage"])}
    sft_version = checkpoint["sft_version"]
    sft = lineage[("sft_dataset", sft_version)]
    pairs = lineage[("filtered_pairs", sft["reads"]["filtered_pairs"])]
    inputs = lineage[("teacher_inputs", pairs["reads"]["teacher_inputs"])]
    outputs = lineage[("teacher_outputs", pairs["reads"]["teacher_outputs"])]
    assert ("raw_documents", inputs["reads"]["raw_documents"]) in lineage
    assert ("raw_documents", base["documents_version"]) in lineage  # what student_base read
    assert {t for t, _ in lineage} >= {"eval_metrics", "eval_predictions", "benchmark_scores"}
    for table, version in lineage:
        assert f"| {table} | {version} |" in card
    template_hashes = read(root, "teacher_inputs", inputs["version"])["template_hash"].unique().to_list()
    assert template_hashes == [inputs["template_sha256"]] and f"sha256 {inputs['template_sha256']}" in card
    assert "rubric: none (heuristic scores only, no judge)" in card  # the fixture has no judge
    head = subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert row["code_version"].startswith(head.strip()) and f"code version: {row['code_version']}" in card
    assert f'"max_steps": "{SFT["max_steps"]}"' in card  # the training run's config, from MLflow
    scores = first_release["scores"]
    student = scores["student"]
    assert f"| benchmark __all__ | accuracy | student | {student.mean:.4f} [{student.ci_low:.4f}" in card
    teacher_usd = read(root, "teacher_outputs", outputs["version"]).filter(pl.col("domain") == DOMAIN)["cost_usd"].sum()
    assert row["teacher_usd"] == pytest.approx(teacher_usd) and "- teacher: $" in card and "GPU hours:" in card
    assert "nexa-release-rows physics --version 1" in card


def test_releasing_the_champion_again_changes_nothing(first_release):
    again, root = first_release["again"], first_release["root"]
    assert again.success and not materialized(again)
    assert "already the champion (v1)" in check_of(again).description
    assert [int(v.version) for v in registry(root).search_model_versions("name='nexa-physics'")] == [1]


@pytest.fixture(scope="module")
def second_release(first_release):
    """A new SFT version (another split seed) and a checkpoint trained and evaluated on it, then the
    default gate (against base and champion) and a gate it passes."""
    root, instance = first_release["root"], first_release["instance"]
    stages = ["student_checkpoint", "eval_predictions", "eval_metrics", "benchmark_scores"]  # the student read once
    config = eval_run_config(SFT, only=stages)
    config["ops"]["sft_dataset"] = {"config": {"seed": 18}}
    result = dg.materialize(
        [*DISTILL_ASSETS, *quality.quality_checks, *EVAL_GRAPH],
        partition_key=DOMAIN,
        instance=instance,
        resources=graph_resources(root),
        run_config=config,
        selection=["sft_dataset", *stages],
    )
    assert result.success
    checkpoint = read(root, "student_checkpoint").row(0, named=True)
    assert checkpoint["checkpoint_id"] != first_release["checkpoint"]["checkpoint_id"]
    scores = candidate_scores(root, DOMAIN, checkpoint["checkpoint_id"], first_release["checkpoint"]["checkpoint_id"])
    out = {"root": root, "checkpoint": checkpoint, "scores": scores}
    out["default"] = materialize_release(instance, root, DOMAIN)
    out["after_default"] = {"champion": champion(root), "release": read(root, "model_release")["model_version"][0]}
    out["promoted"] = materialize_release(instance, root, DOMAIN, **passing_gate(scores))
    return out


def test_the_newest_checkpoint_is_judged_against_the_champion_and_refusal_keeps_it(second_release):
    result, scores = second_release["default"], second_release["scores"]
    check = check_of(result)
    assert not result.success and not check.passed
    assert "champion v1" in check.description and str(scores["champion"]) in check.description
    assert check.metadata["champion_version"].value == 1
    assert check.metadata["champion/mean"].value == scores["champion"].mean
    assert second_release["after_default"] == {"champion": 1, "release": 1}


def test_a_candidate_that_passes_moves_the_champion(second_release):
    root = second_release["root"]
    assert second_release["promoted"].success
    assert champion(root) == 2
    row = read(root, "model_release").row(0, named=True)
    assert row["model_version"] == 2 and row["previous_champion"] == 1
    assert row["checkpoint_id"] == second_release["checkpoint"]["checkpoint_id"]
    assert read(root, "release_history").sort("model_version")["model_version"].to_list() == [1, 2]


def release_rows(root: Path, *args: str) -> tuple[list[dict], str]:
    env = {**os.environ, "NEXA_DELTA_ROOT": str(root / "delta"), "MLFLOW_TRACKING_URI": tracking(root).tracking_uri}
    done = subprocess.run(
        [str(PROJECT / ".venv" / "bin" / "nexa-release-rows"), DOMAIN, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


@pytest.mark.slow
def test_release_rows_are_the_sft_rows_of_that_release_by_time_travel(first_release, second_release):
    root = second_release["root"]
    first, note = release_rows(root, "--version", "1")
    sft_v1 = first_release["checkpoint"]["sft_version"]
    expected = read(root, "sft_dataset", sft_v1).filter(pl.col("split") == "train").sort("example_id")
    assert [r["example_id"] for r in first] == expected["example_id"].to_list()
    assert [r["messages"] for r in first] == expected["messages"].to_list()
    assert f"v1 (checkpoint {first_release['checkpoint']['checkpoint_id']})" in note
    assert f"sft_dataset v{sft_v1}" in note
    champion_rows, _ = release_rows(root)  # the champion: release v2, trained on the newer SFT version
    now = read(root, "sft_dataset").filter(pl.col("split") == "train")
    assert {r["example_id"] for r in champion_rows} == set(now["example_id"])
    assert {r["example_id"] for r in first} != set(now["example_id"])  # the table moved on; v1's rows did not


def test_no_evaluated_checkpoint_is_a_clear_failure(first_release):
    root, instance = first_release["root"], first_release["instance"]
    if not instance.has_dynamic_partition("domain", "chemistry"):
        instance.add_dynamic_partitions("domain", ["chemistry"])
    result = materialize_release(instance, root, "chemistry")
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.step_failure_data.error)
    assert "partition chemistry: no evaluated checkpoint" in message and "materialize eval_metrics" in message


def test_gate_rule_intervals_must_not_touch():
    """Touching intervals overlap: the default refuses; a lift that clears the interval passes; a champion
    without a score on the metric refuses with the reason."""
    base = Score("token_f1", 0.30, 0.20, 0.40, 50)
    touching, clear = Score("token_f1", 0.50, 0.40, 0.60, 50), Score("token_f1", 0.55, 0.41, 0.70, 50)
    assert not promotion_gate(GateConfig(), touching, base, None, None).passed
    assert promotion_gate(GateConfig(), clear, base, None, None).passed
    refused = promotion_gate(GateConfig(), clear, base, None, 3)
    assert not refused.passed and "champion v3 has no token_f1 score" in refused.description()
    with pytest.raises(ValueError, match="gate rule 'median'"):
        GateConfig(rule="median")


def test_lora_checkpoint_of_a_pretrained_base_merges_into_it_and_registers_by_reference(evaluated_physics, tmp_path):
    """A LoRA checkpoint from student_checkpoint (a tiny random llama saved as a hub model is): merged
    weights give the logits of base + adapter; the registry holds the adapter and references the base."""
    import torch
    from peft import PeftModel
    from test_template_families import released_style_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nexa_assets import pretrain, train
    from nexa_core.release.merge import merge_checkpoint
    from nexa_core.release.records import commit_release
    from nexa_core.release.registry import loggable_model, register_release

    root = copy_tables(evaluated_physics["root"], tmp_path)
    texts = read(root, "raw_documents")["text"].to_list()
    base = released_style_model("llama", tmp_path / "llama", texts)
    result = dg.materialize(
        [pretrain.student_base, train.student_checkpoint],
        partition_key=DOMAIN,
        instance=evaluated_physics["instance"],
        resources=graph_resources(root),
        run_config={
            "ops": {
                # the adapter over the released base itself, as a user's LoRA on their own model
                "student_base": {"config": {"base_model": str(base), "continued_pretraining": False}},
                "student_checkpoint": {"config": {"max_steps": 4, "finetune": "lora"}},
            }
        },
    )
    assert result.success
    checkpoint = read(root, "student_checkpoint").row(0, named=True)
    assert checkpoint["finetune"] == "lora"
    folder = tmp_path / "release" / "model"
    merged = merge_checkpoint(checkpoint["artifact_uri"], folder)
    _, base_path = loggable_model(merged)  # PEFT over the base, for the registry
    store = MlflowTracking(tracking_uri=f"sqlite:///{tmp_path / 'lora.db'}", artifact_location=str(tmp_path / "runs"))
    registered = register_release(store.registry_target(DOMAIN), merged, {"domain": DOMAIN})
    files = commit_release(merged, folder, "# card\n", {"test": True})
    assert files == sha256_files(folder) and not (folder / "adapter_config.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is a photon?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with torch.no_grad():
        reference = (
            PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), checkpoint["artifact_uri"])
            .eval()(ids)
            .logits
        )
        got = AutoModelForCausalLM.from_pretrained(folder).eval()(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(base).eval()(ids).logits
    assert torch.allclose(got, reference, atol=1e-4) and not torch.allclose(got, plain, atol=1e-4)
    assert Path(base_path) == base
    assert (registered["registered_model"], registered["model_version"]) == ("nexa-physics", 1)
    logged = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert any(p.name == "adapter_model.safetensors" for p in logged)
    assert not any(p.name == "model.safetensors" for p in logged)  # the base's weights are not copied
    mlmodel = next(p for p in logged if p.name == "MLmodel").read_text()
    assert f"local_base_model_path: {base}" in mlmodel
