"""nexa-serve on a real champion (physics, released by model_release from the real graph): a real
`transformers serve` on 127.0.0.1 behind nexa-serve's front, started by the command and stopped by its PID,
answers through the openai client with the champion's own answers; /v1/models lists it and each of its names
answers (another version is refused, the served one named); the deployment is recorded with the release it
serves; the time from the release's materialization to the first answer is measured; a bad domain or one
without a champion is a clear error. Then the served student feeds the next round: it is the judge of another
domain's evaluation through NEXA_JUDGE_*, cached and costed as any endpoint is."""

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request

import dagster as dg
import openai
import polars as pl
import pytest
from conftest import PROJECT, stop_by_pid
from release_helpers import (
    NEXA_SERVE,
    candidate_scores,
    champion_answers,
    command_env,
    copy_tables,
    evaluate_domain,
    free_port,
    graph_resources,
    materialize_release,
    passing_gate,
    read,
    start_nexa_serve,
    stop_nexa_serve,
)

from nexa_assets import evaluate
from nexa_core.release.serve import model_names, vllm_command
from resources.environment import Environment

DOMAIN, OTHER = "physics", "chemistry"
JUDGE_TOKENS = 24
PRICE = {"input": 0.5, "output": 1.5}  # USD per 1M tokens, as configured for any endpoint


@pytest.fixture(scope="module")
def released(evaluated_physics, tmp_path_factory):
    root = copy_tables(evaluated_physics["root"], tmp_path_factory.mktemp("serve"))
    checkpoint = read(root, "student_checkpoint").row(0, named=True)
    result = materialize_release(
        evaluated_physics["instance"],
        root,
        DOMAIN,
        **passing_gate(candidate_scores(root, DOMAIN, checkpoint["checkpoint_id"])),
    )
    released_at = time.perf_counter()  # model_release materialized
    assert result.success
    return {
        "root": root,
        "instance": evaluated_physics["instance"],
        "released_at": released_at,
        "release": read(root, "model_release").row(0, named=True),
        "checkpoint": checkpoint,
    }


@pytest.fixture(scope="module")
def served(released):
    """nexa-serve physics on a free port, until the module is done; the first answer is timed."""
    server = start_nexa_serve(released["root"], DOMAIN, released["release"]["served_model"])
    try:
        to_first_answer = time.perf_counter() - released["released_at"]
        yield {**released, **server, "to_first_answer": to_first_answer}
    finally:
        stop_nexa_serve(server)


@pytest.mark.slow  # nexa-serve runs as a subprocess
def test_the_champion_answers_through_the_openai_client_with_its_own_answers(served):
    predictions = read(served["root"], "eval_predictions").filter(pl.col("model_role") == "student").head(8)
    sft = read(served["root"], "sft_dataset", served["checkpoint"]["sft_version"])
    prompts = dict(zip(sft["example_id"], sft["messages"].to_list()))
    conversations = [prompts[e][:2] for e in predictions["example_id"]]  # system + question, as evaluated
    answers = [
        served["client"].chat.completions.create(model=served["model"], messages=c, temperature=0, max_tokens=64)
        for c in conversations
    ]
    served_text = [a.choices[0].message.content.strip() for a in answers]
    direct = champion_answers(served["release"]["merged_uri"], conversations, 64)
    assert served_text == [a["prediction"] for a in direct]
    assert served_text == predictions["prediction"].to_list()  # the answers eval_predictions recorded
    assert any(served_text) and all(a.model.startswith(served["model"]) for a in answers)
    assert answers[0].usage.prompt_tokens > 0 and answers[0].usage.completion_tokens > 0


@pytest.mark.slow  # nexa-serve runs as a subprocess
def test_v1_models_lists_the_champion_and_each_of_its_names_answers(served):
    client, release = served["client"], served["release"]
    assert [m.id for m in client.models.list().data] == ["nexa-physics-v1"] == [release["served_model"]]
    assert client.models.retrieve("physics").aliases == ["nexa-physics", "physics"]
    question = [{"role": "user", "content": "What is a photon?"}]
    answers = {
        name: client.chat.completions.create(model=name, messages=question, temperature=0, max_tokens=12)
        for name in ("physics", "nexa-physics", "nexa-physics-v1")
    }
    assert all(a.model.startswith("nexa-physics-v1") for a in answers.values())
    assert len({a.choices[0].message.content for a in answers.values()}) == 1  # one model behind every name
    # a streamed answer passes through the front event by event, the same text
    stream = client.chat.completions.create(
        model="physics", messages=question, temperature=0, max_tokens=12, stream=True
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and "".join(pieces) == answers["physics"].choices[0].message.content
    for other in ("nexa-physics-v2", "chemistry", "gpt-4o"):
        with pytest.raises(openai.NotFoundError) as refused:
            client.chat.completions.create(model=other, messages=question, max_tokens=4)
        assert f"model '{other}' is not served here: this endpoint serves nexa-physics-v1" in str(refused.value)
    with pytest.raises(openai.NotFoundError, match="serves nexa-physics-v1"):
        client.models.retrieve("nexa-physics-v2")


def test_a_distilled_release_answers_to_its_own_registered_name():
    release = {"served_model": "nexa-physics-distilled-v2", "registered_model": "nexa-physics-distilled"}
    assert model_names({**release, "domain": "physics"}) == [
        "nexa-physics-distilled-v2",
        "nexa-physics-distilled",
        "physics",
    ]


@pytest.mark.slow  # nexa-serve runs as a subprocess
def test_the_deployment_is_recorded_with_url_version_and_start(served):
    assert (
        f"answers at {served['base_url']} as model '{served['model']}', also 'nexa-physics' and 'physics'"
        in served["announcement"]
    )
    row = read(served["root"], "deployment").row(-1, named=True)
    assert row["release_asset"] == "model_release"  # the SFT champion's release, not distilled_release
    assert row["endpoint_url"] == served["base_url"] and row["model_version"] == served["release"]["model_version"]
    assert row["served_model"] == served["model"] and row["release_id"] == served["release"]["release_id"]
    assert row["started_at"].timestamp() <= time.time() and row["ready_seconds"] > 0
    with dg.DagsterInstance.from_config(str(served["root"] / "serve_home")) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("deployment"))
    assert event.asset_materialization.partition == DOMAIN
    assert event.asset_materialization.metadata["endpoint_url"].value == served["base_url"]
    assert event.asset_materialization.metadata["model_version"].value == served["release"]["model_version"]
    assert event.asset_materialization.metadata["release"].value == dg.AssetKey("model_release")


@pytest.mark.slow  # nexa-serve runs as a subprocess
def test_time_from_release_to_first_answer(served):
    ready = read(served["root"], "deployment")["ready_seconds"][-1]
    print(
        f"\nmodel_release materialized -> first answer from nexa-serve: {served['to_first_answer']:.1f} s "
        f"(transformers serve launch -> /health: {ready:.1f} s)"
    )
    assert ready < served["to_first_answer"] < 300


@pytest.mark.slow  # nexa-serve runs as a subprocess
def test_stopping_nexa_serve_by_pid_stops_its_server(released):
    root, port = released["root"], free_port()
    proc = subprocess.Popen(
        [NEXA_SERVE, DOMAIN, "--port", str(port), "--device", "cpu"],
        env=command_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert "answers at" in proc.stdout.readline()
        deployments = read(root, "deployment").filter(pl.col("endpoint_url") == f"http://127.0.0.1:{port}/v1")
        server_pid = deployments["pid"].item()  # transformers serve, behind the front
    finally:
        stop_by_pid(proc)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)


@pytest.fixture(scope="module")
def judged_other_domain(served, monkeypatch_module):
    """chemistry read, fine-tuned and answered (student only, short answers), then judged twice by the served
    physics champion, configured as any endpoint is: NEXA_JUDGE_* through the environment settings."""
    root, instance = served["root"], served["instance"]
    evaluate_domain(
        instance,
        root,
        OTHER,
        only=["student_base", "student_checkpoint", "eval_predictions"],
        roles=["student"],
        max_new_tokens=16,
    )
    monkeypatch_module.setenv("NEXA_TEST_JUDGE_KEY", "unused")
    judge = Environment.read(
        {
            "NEXA_JUDGE_BASE_URL": served["base_url"],
            "NEXA_JUDGE_MODEL": served["model"],
            "NEXA_JUDGE_API_KEY_ENV": "NEXA_TEST_JUDGE_KEY",
            "NEXA_JUDGE_OPTIONS": json.dumps(
                {"max_tokens": JUDGE_TOKENS, "max_concurrency": 2, "prices": {served["model"]: PRICE}}
            ),
        }
    ).judge
    runs = []
    for _ in range(2):
        result = dg.materialize(
            [evaluate.eval_predictions.to_source_asset(), evaluate.eval_metrics],
            partition_key=OTHER,
            instance=instance,
            selection=["eval_metrics"],
            resources=graph_resources(root, judge=judge),
            run_config={"ops": {"eval_metrics": {"config": {"n_resamples": 200}}}},
        )
        assert result.success
        runs.append(
            {
                "result": result,
                "scores": read(root, "eval_metrics").filter(pl.col("domain") == OTHER),
                "cache": read(root, "teacher_cache"),
            }
        )
    return {**served, "judge": judge, "runs": runs}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def judge_log(instance, result) -> list[str]:
    return [e.user_message for e in instance.all_logs(result.run_id) if "new judgements" in (e.user_message or "")]


@pytest.mark.slow  # nexa-serve runs as a subprocess
def test_the_served_champion_judges_another_domains_evaluation(judged_other_domain):
    judge, (first, _) = judged_other_domain["judge"], judged_other_domain["runs"]
    assert judge.backend == "openai" and judge.base_url == judged_other_domain["base_url"]
    scores = first["scores"]
    assert scores.height > 0 and (scores["judge_model"] == judged_other_domain["model"]).all()
    assert scores["rubric_sha256"].is_not_null().all() and scores["judge_request_hash"].is_not_null().all()
    # the judge's answers are the champion's: the same text for the same rubric prompt. An answer cut at
    # max_tokens is asked again with twice as many (the collector's retry after "length"); that one is kept.
    sample = scores.head(3)
    conversations = [json.loads(p) for p in sample["judge_prompt"]]
    merged = judged_other_domain["release"]["merged_uri"]
    short, longer = (champion_answers(merged, conversations, n) for n in (JUDGE_TOKENS, 2 * JUDGE_TOKENS))
    expected = [s["prediction"] if s["new_tokens"] < JUDGE_TOKENS else g["prediction"] for s, g in zip(short, longer)]
    assert [(r or "").strip() for r in sample["judge_raw"]] == expected
    # a tiny student writes no rubric JSON: every judgement is recorded unparseable, never scored 0
    parsed = scores.filter(pl.col("judge_status") == "ok")
    assert scores.filter(pl.col("judge_status") != "ok")["judge_score"].is_null().all()
    print(f"\n{parsed.height} of {scores.height} judgements by {judged_other_domain['model']} parsed")


@pytest.mark.slow  # nexa-serve runs as a subprocess
def test_the_served_judge_is_cached_and_costed_as_any_endpoint(judged_other_domain):
    instance = judged_other_domain["instance"]
    (first, second), model = judged_other_domain["runs"], judged_other_domain["model"]
    cache = first["cache"].filter(pl.col("model") == model)
    hashes = set(first["scores"]["judge_request_hash"])
    assert hashes <= set(cache["request_hash"])
    assert (cache["prompt_tokens"] > 0).all() and (cache["completion_tokens"] > 0).all()
    expected = (cache["prompt_tokens"] * PRICE["input"] + cache["completion_tokens"] * PRICE["output"]) / 1e6
    assert cache["cost_usd"].to_list() == pytest.approx(expected.to_list()) and cache["cost_usd"].sum() > 0
    # the second evaluation is served from the cache: no new calls, the same judgements
    assert second["cache"].height == first["cache"].height
    assert f"0 new judgements, {len(hashes)} cached" in judge_log(instance, second["result"])[0]
    assert not re.search(r"(?<!\d)0 new judgements", judge_log(instance, first["result"])[0])  # not "50 new"
    assert second["scores"]["judge_raw"].to_list() == first["scores"]["judge_raw"].to_list()


@pytest.mark.slow
def test_unknown_domain_no_champion_and_the_vllm_command(judged_other_domain):
    root = judged_other_domain["root"]

    def nexa_serve(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [NEXA_SERVE, *args], env=command_env(root), capture_output=True, text=True, timeout=300, cwd=PROJECT
        )

    unknown = nexa_serve("astronomy", "--port", str(free_port()))
    assert unknown.returncode == 2 and "nexa-serve: unknown domain 'astronomy'" in unknown.stderr
    assert "physics" in unknown.stderr and "chemistry" in unknown.stderr  # the domains it does know
    no_champion = nexa_serve(OTHER, "--port", str(free_port()))  # chemistry has data, and no release
    assert no_champion.returncode == 2
    assert "domain chemistry has no champion" in no_champion.stderr
    assert "materialize model_release" in no_champion.stderr
    vllm = nexa_serve(DOMAIN, "--vllm", "--port", "8001")
    merged = judged_other_domain["release"]["merged_uri"]
    assert (
        vllm.returncode == 0
        and vllm.stdout.strip() == f"vllm serve {merged} --served-model-name {judged_other_domain['model']} --port 8001"
    )


def test_vllm_command_for_a_lora_release_serves_the_adapter_over_its_base(tmp_path):
    adapter, base, merged = tmp_path / "adapter", tmp_path / "base", tmp_path / "merged"
    for folder in (adapter, base, merged):
        folder.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 4}))
    (merged / "manifest.json").write_text(json.dumps({"merged_from": str(adapter), "base_model_path": str(base)}))
    assert vllm_command(str(merged), "nexa-physics-v2") == (
        f"vllm serve {base} --enable-lora --lora-modules nexa-physics-v2={adapter} --max-lora-rank 8 --port 8000"
    )
