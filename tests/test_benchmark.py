"""Benchmark suites on CPU: suite validation names the file and row; lm-evaluation-harness runs the
suites offline (multiple choice and generative, JSONL and a user's own task YAML) on a tiny model
for the checkpoint and its base; a student trained on the answers beats its base; lm-eval's
log-likelihoods equal our own computation with transformers/peft; the asset through
dagster.materialize, and the leaderboard's benchmark columns and report section."""

import json
import random
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from conftest import SAMPLE_RAW
from graph_helpers import resources

from nexa_assets import evaluate, train
from nexa_assets.benchmark import benchmark_scores
from nexa_core import schemas
from nexa_core.data.documents import load_domain
from nexa_core.distill.sft import SplitConfig
from nexa_core.evaluate.benchmark import (
    ALL_SUITES,
    GENERATIVE,
    MULTIPLE_CHOICE,
    SuiteError,
    load_suites,
    run_benchmark,
    summarize,
)
from nexa_core.evaluate.leaderboard import leaderboard_markdown, rank_checkpoints, ranked_schema, write_report
from nexa_core.recipe import BenchmarkConfig
from resources.delta import PROJECT_ROOT, write_partition
from resources.launcher import TrainingLauncher

DOMAIN = "physics"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
SYSTEM = SplitConfig.system_prompt.format(domain=DOMAIN)
# What the trained student is taught (correct choice first here; shuffled in the suite file).
MC = [
    ("Which particle carries no electric charge?", ["the neutron", "the electron", "the proton", "the positron"]),
    ("What holds the nucleus together?", ["the strong nuclear force", "gravity", "magnetism", "friction"]),
    ("Which colour of light has the shortest wavelength?", ["violet", "red", "green", "yellow"]),
    ("What unit measures equivalent radiation dose?", ["the sievert", "the joule", "the kelvin", "the watt"]),
]
GEN = [("What is the SI unit of temperature?", "kelvin"), ("Which gas gives much of the background dose?", "radon")]
OWN_TASK = [
    {"q": "Is light a wave?", "opts": ["yes", "no"], "gold": 0},
    {"q": "Is a neutron charged?", "opts": ["yes", "no"], "gold": 1},
    {"q": "Does heat flow from cold to hot by itself?", "opts": ["yes", "no"], "gold": 1},
]


# --- suite validation ---------------------------------------------------------------------------

GOOD = {"question": "Which particle has no charge?", "choices": ["neutron", "proton"], "answer": "neutron"}


def _suite(folder: Path, lines: list[str], name: str = "facts.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize(
    "bad, reason",
    [
        ('{"question": "Which particle?", "choices": ["a", "b"], "answer": "a"', "not valid JSON"),
        (json.dumps({"question": "Which particle?", "choices": ["neutron", "proton"]}), "'answer' is missing"),
        (json.dumps({**GOOD, "answer": "electron"}), "'answer' 'electron' is not one of the choices"),
        (json.dumps({**GOOD, "answer": 2}), "index 2 is out of range"),
        (json.dumps({**GOOD, "choices": ["neutron"]}), "at least 2 choices"),
        (json.dumps({**GOOD, "choices": ["neutron", "neutron"]}), "repeats a choice"),
        (json.dumps({**GOOD, "question": "  "}), "'question' is missing"),
        (json.dumps({**GOOD, "choises": ["a", "b"]}), "unknown field(s) ['choises']"),
        (json.dumps(["a", "b"]), "expected a JSON object"),
        (json.dumps({"question": "What is the unit of energy?", "answer": ""}), "must be non-empty text"),
    ],
)
def test_a_malformed_row_names_the_partition_file_and_row(tmp_path, bad, reason):
    # row 4: a good row, a blank line (not a row, but it counts as a line), a good row, then the bad one
    folder = _suite(tmp_path / DOMAIN, [json.dumps(GOOD), "", json.dumps({**GOOD, "answer": 1}), bad])
    with pytest.raises(SuiteError) as error:
        load_suites(folder, DOMAIN)
    message = str(error.value)
    assert f"partition {DOMAIN}" in message and str(folder / "facts.jsonl") in message and "row 4" in message
    assert reason in message


def test_answers_by_text_or_index_and_generative_rows(tmp_path):
    folder = _suite(
        tmp_path / DOMAIN,
        [
            json.dumps(GOOD),
            json.dumps({**GOOD, "answer": 1, "topic": "atoms"}),
            json.dumps({"question": "What is the unit of energy?", "answer": "joule"}),
            json.dumps({"question": "How many protons does carbon have?", "answer": 6}),
        ],
    )
    (suite,) = load_suites(folder, DOMAIN)
    items = suite.items
    assert items["answer_index"].to_list() == [0, 1, None, None]
    assert items["answer"].to_list() == ["neutron", "proton", "joule", "6"]
    assert items["kind"].to_list() == [MULTIPLE_CHOICE, MULTIPLE_CHOICE, GENERATIVE, GENERATIVE]
    assert items["topic"].to_list() == ["facts", "atoms", "facts", "facts"]  # the suite name unless given
    assert load_suites(tmp_path / "no_such_domain", "chemistry") == []


@pytest.mark.parametrize(
    "text, reason",
    [
        ("group: mine\ntask: [a, b]\n", "groups are not supported"),
        ("task: mine\noutput_type: loglikelihood_rolling\n", "output_type 'loglikelihood_rolling' is not scored"),
        ("task: mine\n  bad: [indent\n", "cannot be read as YAML"),
    ],
)
def test_a_bad_task_file_is_named(tmp_path, text, reason):
    folder = tmp_path / DOMAIN
    folder.mkdir()
    (folder / "mine.yaml").write_text(text)
    with pytest.raises(SuiteError) as error:
        load_suites(folder, DOMAIN)
    assert str(folder / "mine.yaml") in str(error.value) and reason in str(error.value)


# --- the shipped sample suites --------------------------------------------------------------------


@pytest.mark.parametrize("domain", ["physics", "chemistry", "biology"])
def test_sample_suites_ask_about_the_corpus(domain):
    suites = {s.name: s for s in load_suites(PROJECT_ROOT / "data" / "eval" / domain, domain)}
    documents, _ = load_domain(SAMPLE_RAW, domain)
    corpus = {t: " ".join(g["text"]).lower() for (t,), g in documents.group_by("topic")}
    facts = suites[f"{domain}_facts"].items
    assert facts.height >= 30 and (facts["kind"] == MULTIPLE_CHOICE).all()
    assert (facts["choices"].list.len() == 4).all() and facts["question"].n_unique() == facts.height
    assert set(facts["topic"]) == set(corpus)  # every topic of the corpus, named as the corpus names it
    assert facts["answer_index"].n_unique() == 4  # the correct choice is not always in the same place
    everything = " ".join(corpus.values())
    assert not any(q.lower().rstrip("?") in everything for q in facts["question"])  # asked, not copied
    short = suites[f"{domain}_short_answers"].items
    assert 5 <= short.height <= 10 and (short["kind"] == GENERATIVE).all()
    for row in short.iter_rows(named=True):  # every short answer is stated in its topic's documents
        assert row["answer"].lower().removeprefix("a ") in corpus[row["topic"]], row


# --- running through lm-eval on tiny models --------------------------------------------------------


def _chat(question: str, answer: str | None = None) -> list[dict]:
    turns = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    return turns + ([{"role": "assistant", "content": answer}] if answer is not None else [])


def _teach(model, tokenizer, pairs, max_steps: int = 150):
    """Full fine-tune on the chat-formatted answers until they are memorised."""
    import torch

    texts = [tokenizer.apply_chat_template(_chat(q, a), tokenize=False) for q, a in pairs]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(max_steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if loss.item() < 0.05:
            break
    return model.eval(), loss.item()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A config-built base; a full fine-tune of it taught the suite's answers (manifest names the
    base); a LoRA adapter on it with random non-zero weights (so it changes every log-likelihood)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nexa_core.train.student import build_default_student

    root = tmp_path_factory.mktemp("models")
    texts = [SYSTEM] + [q for q, _ in MC + GEN] + [c for _, cs in MC for c in cs] + [a for _, a in GEN]
    base = build_default_student(texts * 5, root / "base", seed=0, hidden_size=64, layers=2, heads=4, vocab_size=512)
    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(0)
    full, loss = _teach(AutoModelForCausalLM.from_pretrained(base), tokenizer, [(q, cs[0]) for q, cs in MC] + GEN)
    assert loss < 0.2, f"the tiny student did not learn its answers (loss {loss})"
    full.save_pretrained(root / "full")
    tokenizer.save_pretrained(root / "full")
    (root / "full" / "manifest.json").write_text(json.dumps({"base_model_path": str(base)}))
    torch.manual_seed(1)
    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj", "down_proj"],
            init_lora_weights=False,
            task_type="CAUSAL_LM",
        ),
    )
    artifact = root / "artifacts" / DOMAIN / "sft-v0-test"  # where the launcher would put it
    lora.save_pretrained(artifact / "adapter")
    tokenizer.save_pretrained(artifact / "adapter")
    return {"base": base, "full": root / "full", "adapter": artifact / "adapter", "root": root}


@pytest.fixture(scope="module")
def suite_root(tmp_path_factory):
    """<root>/physics: a multiple-choice suite (answers by text and by index), a generative one and a
    user's own lm-eval task file over its own data."""
    root = tmp_path_factory.mktemp("eval")
    folder = root / DOMAIN
    folder.mkdir()
    rng = random.Random(3)
    rows = []
    for i, (question, choices) in enumerate(MC):
        shuffled = rng.sample(choices, len(choices))
        answer = choices[0] if i % 2 else shuffled.index(choices[0])
        rows.append({"question": question, "choices": shuffled, "answer": answer, "topic": f"topic{i % 2}"})
    (folder / "facts.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "short.jsonl").write_text("\n".join(json.dumps({"question": q, "answer": a}) for q, a in GEN) + "\n")
    data = root / "own_task_data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in OWN_TASK) + "\n")
    (folder / "own_task.yaml").write_text(
        "task: my_yes_no\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: '{{q}}'\ndoc_to_choice: '{{opts}}'\ndoc_to_target: gold\nmetric_list:\n  - metric: acc\n"
    )
    return root


@pytest.fixture(scope="module")
def runs(models, suite_root):
    suites = load_suites(suite_root / DOMAIN, DOMAIN)
    out = {}
    for kind in ("full", "adapter"):
        # fp32, so the log-likelihoods can be checked against transformers to 1e-3 (bf16: tests/test_precision.py)
        items, summary = run_benchmark(models[kind], suites, DOMAIN, BenchmarkConfig.load(overrides={"bf16": "false"}))
        out[kind] = {"items": items, "summary": summary}
    return out


@pytest.mark.parametrize("kind", ["full", "adapter"])
def test_suites_run_through_lm_eval_for_the_checkpoint_and_its_base(runs, kind):
    items, summary = runs[kind]["items"], runs[kind]["summary"]
    assert summary["chat_template"] is True and summary["system_prompt"] == SYSTEM
    assert summary["device"] == "cpu" and summary["lm_eval_version"] == "0.4.13"
    sizes = {"facts": len(MC), "short": len(GEN), "own_task": len(OWN_TASK)}
    assert {name: s["items"] for name, s in summary["suites"].items()} == sizes
    for role in ("student", "base"):
        mine = items.filter(pl.col("model_role") == role)
        assert {s: mine.filter(pl.col("suite") == s).height for s in sizes} == sizes  # n equals the suite size
        mc, gen = mine.filter(pl.col("kind") == MULTIPLE_CHOICE), mine.filter(pl.col("kind") == GENERATIVE)
        assert mc["accuracy"].is_between(0, 1).all() and mc["accuracy"].null_count() == 0
        assert mc["exact_match"].is_null().all() and gen["accuracy"].is_null().all()
        assert gen["exact_match"].is_between(0, 1).all() and gen["token_f1"].is_between(0, 1).all()
        assert sorted(mine.filter(pl.col("suite") == "facts")["row"]) == [1, 2, 3, 4]
    own = items.filter(pl.col("suite") == "own_task")
    assert set(own["lm_eval_task"]) == {"my_yes_no"} and set(own["prediction"]) <= {"yes", "no"}


def test_a_student_taught_the_answers_beats_its_base(runs):
    items = runs["full"]["items"]
    student = items.filter((pl.col("model_role") == "student") & (pl.col("suite") != "own_task"))
    assert student.filter(pl.col("kind") == MULTIPLE_CHOICE)["accuracy"].to_list() == [1.0] * len(MC)
    gen = student.filter(pl.col("kind") == GENERATIVE)
    assert gen["prediction"].to_list() == gen["reference"].to_list()
    assert gen["exact_match"].to_list() == [1.0] * len(GEN) and gen["token_f1"].to_list() == [1.0] * len(GEN)
    # the base never saw the answers: its score is its own, not the student's
    base = items.filter((pl.col("model_role") == "base") & (pl.col("suite") == "short"))
    assert base["exact_match"].sum() == 0
    summary = summarize(
        items.with_columns(domain=pl.lit(DOMAIN), checkpoint_id=pl.lit("c")),
        by=["domain", "checkpoint_id", "model_role"],
        n_resamples=500,
    )
    overall = summary.filter(
        (pl.col("suite") == "facts") & (pl.col("topic") == "__all__") & (pl.col("metric") == "accuracy")
    )
    student_row = overall.filter(pl.col("model_role") == "student").row(0, named=True)
    assert student_row["mean"] == 1.0 and student_row["n"] == len(MC) and student_row["chance"] == 0.25
    assert ((summary["ci_low"] <= summary["mean"]) & (summary["mean"] <= summary["ci_high"])).all()
    topics = summary.filter((pl.col("suite") == "facts") & (pl.col("metric") == "accuracy"))["topic"]
    assert set(topics) == {"topic0", "topic1", "__all__"}
    all_suites = summary.filter(
        (pl.col("suite") == ALL_SUITES)
        & (pl.col("topic") == "__all__")
        & (pl.col("metric") == "accuracy")
        & (pl.col("model_role") == "student")
    )
    assert all_suites["n"].to_list() == [len(MC) + len(OWN_TASK)]
    assert all_suites["chance"].to_list() == [pytest.approx((len(MC) * 0.25 + len(OWN_TASK) * 0.5) / 7)]


def _direct_logprobs(model, tokenizer, question: str, choices: list[str]) -> list[float]:
    """Summed log-probability of each choice as the assistant's reply, computed here with
    transformers. As lm-eval does, whitespace ending the prompt is scored with the continuation."""
    import torch

    prompt = tokenizer.apply_chat_template(_chat(question), add_generation_prompt=True, tokenize=False)
    context = prompt.rstrip()
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    out = []
    for choice in choices:
        ids = tokenizer(context + prompt[len(context) :] + choice, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
        out.append(
            sum(logprobs[len(context_ids) - 1 + i, token].item() for i, token in enumerate(ids[len(context_ids) :]))
        )
    return out


def test_lm_eval_log_likelihoods_are_the_roles_own(models, suite_root, runs):
    """The student's scores come from base + adapter, the base's from the base alone, both on the
    chat-templated question with the training system prompt, choice by choice in suite order."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models["adapter"])
    base = AutoModelForCausalLM.from_pretrained(models["base"]).eval()
    student = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(models["base"]), str(models["adapter"])
    ).eval()
    suite = {s.name: s for s in load_suites(suite_root / DOMAIN, DOMAIN)}["facts"].items
    items = runs["adapter"]["items"].filter(pl.col("suite") == "facts")
    for role, model in (("student", student), ("base", base)):
        for row in items.filter(pl.col("model_role") == role).iter_rows(named=True):
            asked = suite.filter(pl.col("row") == row["row"]).row(0, named=True)
            assert row["question"] == asked["question"] and row["choices"] == asked["choices"]
            expected = _direct_logprobs(model, tokenizer, asked["question"], asked["choices"])
            assert row["choice_logprobs"] == pytest.approx(expected, abs=1e-3), (role, row["question"])
            best = max(range(len(expected)), key=expected.__getitem__)
            assert row["prediction"] == asked["choices"][best] and row["reference"] == asked["answer"]
            assert row["accuracy"] == float(best == asked["answer_index"])
    pairs = items.pivot("model_role", index="item_id", values="choice_logprobs")
    for student_lp, base_lp in zip(pairs["student"], pairs["base"]):
        assert student_lp.to_list() != pytest.approx(base_lp.to_list(), abs=1e-3)  # the adapter was applied


# --- the asset, and the leaderboard --------------------------------------------------------------


def _checkpoint_row(adapter: Path) -> pl.DataFrame:
    from nexa_core.artifacts import sha256_files

    return pl.DataFrame(
        [
            {
                "domain": DOMAIN,
                "checkpoint_id": "ckpt-0123456789ab",
                "artifact_uri": str(adapter),
                "files_sha256": json.dumps(sha256_files(adapter)),
                "base_model": "nexa-tiny-llama",
                "sft_version": 0,
                "round": 0,
            }
        ],
        schema={
            k: v
            for k, v in schemas.STUDENT_CHECKPOINT.items()
            if k in {"domain", "checkpoint_id", "artifact_uri", "files_sha256", "base_model", "sft_version", "round"}
        },
    )


def _materialize(instance, root: Path, suite_dir: Path, domain: str = DOMAIN, raise_on_error: bool = True):
    if not instance.has_dynamic_partition("domain", domain):
        instance.add_dynamic_partitions("domain", [domain])
    return dg.materialize(
        [train.student_checkpoint.to_source_asset(), benchmark_scores, evaluate.leaderboard],
        partition_key=domain,
        instance=instance,
        selection=["benchmark_scores", "leaderboard"],
        raise_on_error=raise_on_error,
        resources={**resources(root / "delta"), "launcher": TrainingLauncher(artifact_root=str(root / "artifacts"))},
        run_config={"ops": {"benchmark_scores": {"config": {"suite_root": str(suite_dir), "n_resamples": 500}}}},
    )


@pytest.fixture(scope="module")
def asset_run(models, suite_root, tmp_path_factory):
    """benchmark_scores for physics through dagster.materialize: the runner is launched by the
    training launcher (a subprocess speaking Pipes); then the leaderboard."""
    root = tmp_path_factory.mktemp("asset")
    write_partition(
        str(root / "delta" / "nexa" / "student_checkpoint"),
        _checkpoint_row(models["adapter"]),
        {"domain": [DOMAIN]},
        None,
        "student_checkpoint",
    )
    (root / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "home")) as instance:
        result = _materialize(instance, root, suite_root)
        yield {"root": root, "result": result, "instance": instance}


def _read(root: Path, table: str) -> pl.DataFrame:
    return pl.read_delta(str(root / "delta" / "nexa" / table))


def test_asset_stores_per_item_scores_and_history_with_intervals(asset_run):
    root = asset_run["root"]
    scores = _read(root, "benchmark_scores")
    assert scores.columns == list(schemas.BENCHMARK_SCORES)
    assert scores.height == 2 * (len(MC) + len(GEN) + len(OWN_TASK))
    assert set(scores["checkpoint_id"]) == {"ckpt-0123456789ab"} and set(scores["model_role"]) == {"student", "base"}
    config = json.loads(scores["benchmark_config"][0])
    assert config["chat_template_applied"] is True and config["lm_eval_version"] == "0.4.13"
    history = _read(root, "benchmark_history")
    facts = history.filter((pl.col("suite") == "facts") & (pl.col("metric") == "accuracy"))
    assert set(facts["topic"]) == {"topic0", "topic1", "__all__"} and set(facts["model_role"]) == {"student", "base"}
    assert ((history["ci_low"] <= history["mean"]) & (history["mean"] <= history["ci_high"])).all()
    meta = asset_run["result"].asset_materializations_for_node("benchmark_scores")[0].metadata
    for key in (
        "facts/student/accuracy",
        "facts/student/accuracy_ci_low",
        "facts/base/accuracy_ci_high",
        "short/student/exact_match",
        "short/base/token_f1",
        "__all__/lift/accuracy",
    ):
        assert isinstance(meta[key].value, float), key
    assert meta["facts/n"].value == len(MC) and meta["facts/chance"].value == 0.25
    assert "| facts | accuracy |" in meta["by_suite"].value and meta["chat_template"].value is True


def test_leaderboard_shows_benchmark_accuracy_and_a_report_section(asset_run):
    root = asset_run["root"]
    meta = asset_run["result"].asset_materializations_for_node("leaderboard")[0].metadata
    assert Path(meta["report"].value) == root / "reports" / "leaderboard.html"  # graph_helpers' reports folder
    page = Path(meta["report"].value).read_text()
    assert "Benchmark suites" in page and "ckpt-0123456" in page and "<td>facts</td>" in page
    # with an eval_metrics history for the same checkpoint, its row carries the benchmark columns
    history = pl.DataFrame(
        [
            {
                "domain": DOMAIN,
                "round": 0,
                "checkpoint_id": "ckpt-0123456789ab",
                "sft_version": 0,
                "model_role": role,
                "topic": "__all__",
                "metric": "token_f1",
                "mean": 0.5,
                "ci_low": 0.4,
                "ci_high": 0.6,
                "n": 10,
                "created_at": T0,
            }
            for role in ("student", "base")
        ],
        schema=schemas.EVAL_HISTORY,
    )
    benchmarks = _read(root, "benchmark_history")
    ranked = rank_checkpoints(history, benchmarks)
    expected = benchmarks.filter(
        (pl.col("suite") == "__all__") & (pl.col("topic") == "__all__") & (pl.col("metric") == "accuracy")
    ).sort("model_role")  # base, student
    row = ranked.row(0, named=True)
    assert row["bench_accuracy"] == expected["mean"][1] and row["bench_base_accuracy"] == expected["mean"][0]
    assert row["bench_n"] == len(MC) + len(OWN_TASK) and row["bench_ci_low"] <= row["bench_accuracy"]
    assert "| bench acc | bench base |" in leaderboard_markdown(ranked)


def test_a_domain_without_suites_gives_an_empty_table_not_an_error(asset_run, tmp_path):
    result = _materialize(asset_run["instance"], asset_run["root"], tmp_path / "empty_root", domain="chemistry")
    meta = result.asset_materializations_for_node("benchmark_scores")[0].metadata
    assert meta["suites"].value == 0 and "no benchmark suites" in meta["note"].value
    assert _read(asset_run["root"], "benchmark_scores").filter(pl.col("domain") == "chemistry").is_empty()


def test_a_malformed_suite_fails_the_asset_naming_file_and_row(asset_run, tmp_path):
    _suite(tmp_path / DOMAIN, [json.dumps(GOOD), json.dumps({**GOOD, "answer": "quark"})], name="mine.jsonl")
    result = _materialize(asset_run["instance"], asset_run["root"], tmp_path, raise_on_error=False)
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.step_failure_data.error)
    assert "partition physics" in message and "mine.jsonl row 2" in message and "'quark'" in message


def test_a_domain_without_suites_is_asked_its_held_out_questions_and_the_gate_judges_on_them(
    asset_run, models, tmp_path
):
    """No suite in the suite root: benchmark_scores builds one from the checkpoint's SFT test split (under the
    artifact root, per SFT version), runs it like a hand-written suite, and the gate judges on its accuracy."""
    from deltalake import DeltaTable
    from test_suite_builder import PAIRS, sft_frame

    from nexa_core.release.gate import GateConfig, gate_metric, promotion_gate, score_of

    root, domain, checkpoint_id = asset_run["root"], "geology", "geo-0123456789ab"
    sft_uri = str(root / "delta" / "nexa" / "sft_dataset")
    write_partition(sft_uri, sft_frame(domain=domain), {"domain": [domain]}, None, "sft_dataset")
    sft_version = DeltaTable(sft_uri).version()
    checkpoint = _checkpoint_row(models["adapter"]).with_columns(
        domain=pl.lit(domain), checkpoint_id=pl.lit(checkpoint_id), sft_version=pl.lit(sft_version)
    )
    write_partition(
        str(root / "delta" / "nexa" / "student_checkpoint"),
        checkpoint,
        {"domain": [domain]},
        None,
        "student_checkpoint",
    )
    result = _materialize(asset_run["instance"], root, tmp_path / "no_suites", domain=domain)
    meta = result.asset_materializations_for_node("benchmark_scores")[0].metadata
    scores = _read(root, "benchmark_scores").filter(pl.col("domain") == domain)
    held_out = {q: a for q, a, split in PAIRS if split == "test"}
    (suite,) = set(scores["suite"])
    assert suite.startswith("heldout_") and meta["suites"].value == 1 and "test split" in meta["suite_origin"].value
    folder = root / "artifacts" / domain / f"suite-v{sft_version}-{suite.removeprefix('heldout_')}"
    assert meta["suite_dir"].value == str(folder) and (folder / f"{suite}.jsonl").is_file()
    for role in ("student", "base"):
        asked = scores.filter(pl.col("model_role") == role)
        assert asked.height == len(held_out) and set(asked["kind"]) == {MULTIPLE_CHOICE}
        assert {(r["question"], r["reference"]) for r in asked.iter_rows(named=True)} == set(held_out.items())
    benchmarks = _read(root, "benchmark_history").filter(pl.col("domain") == domain)
    assert set(benchmarks["suite"]) == {suite, ALL_SUITES}
    # the test split scored the student far above its base: the gate still judges on the suite
    test_split = pl.DataFrame(
        [
            {
                "domain": domain,
                "round": 0,
                "checkpoint_id": checkpoint_id,
                "sft_version": sft_version,
                "model_role": role,
                "topic": "__all__",
                "metric": "token_f1",
                "mean": mean,
                "ci_low": mean,
                "ci_high": mean,
                "n": 8,
                "created_at": T0,
            }
            for role, mean in (("student", 0.9), ("base", 0.1))
        ],
        schema=schemas.EVAL_HISTORY,
    )
    gate = GateConfig()
    assert gate_metric(gate, checkpoint_id, test_split, benchmarks) == "benchmark_accuracy"
    candidate = score_of(checkpoint_id, "student", "benchmark_accuracy", test_split, benchmarks)
    base = score_of(checkpoint_id, "base", "benchmark_accuracy", test_split, benchmarks)
    student_items = scores.filter(pl.col("model_role") == "student")["accuracy"]
    assert candidate.n == len(held_out) and candidate.mean == pytest.approx(student_items.mean())
    decision = promotion_gate(gate, candidate, base, None, None)
    assert decision.metric == "benchmark_accuracy" and decision.candidate == candidate and decision.base == base


def _benchmark_history(checkpoint: str, domain: str, student: float, base: float) -> list[dict]:
    rows = []
    for role, value in (("student", student), ("base", base)):
        for suite, topic in (("__all__", "__all__"), ("facts", "__all__"), ("facts", "optics"), ("__all__", "optics")):
            rows.append(
                {
                    "domain": domain,
                    "round": 0,
                    "checkpoint_id": checkpoint,
                    "model_role": role,
                    "suite": suite,
                    "topic": topic,
                    "metric": "accuracy",
                    "mean": value,
                    "ci_low": value - 0.1,
                    "ci_high": value + 0.1,
                    "n": 30,
                    "chance": 0.25,
                    "created_at": T0,
                }
            )
    return rows


def test_leaderboard_benchmark_columns_and_report_without_lm_eval(tmp_path):
    from test_leaderboard import _history

    history = _history()
    benchmarks = pl.DataFrame(
        _benchmark_history("chem-r2-0123456789abcdef", "chem", 0.8, 0.3), schema=schemas.BENCHMARK_HISTORY
    )
    ranked = rank_checkpoints(history, benchmarks)
    assert ranked.columns == list(ranked_schema())
    by_id = {r["checkpoint_id"]: r for r in ranked.iter_rows(named=True)}
    assert by_id["chem-r2-0123456789abcdef"]["bench_accuracy"] == 0.8
    assert by_id["chem-r2-0123456789abcdef"]["bench_base_accuracy"] == 0.3
    assert by_id["bio-r1-0123456789abcdef"]["bench_accuracy"] is None  # never benchmarked
    assert "0.800 ± 0.100" in leaderboard_markdown(ranked)
    page = write_report(history, ranked, tmp_path / "leaderboard.html", benchmarks).read_text()
    assert page.count("<img") == 2 * 3 + 1  # one benchmark chart (accuracy per topic) for chem
    assert "Benchmark suites" in page and "<td>optics</td>" in page
    without = write_report(history, ranked, tmp_path / "plain.html").read_text()
    assert "Benchmark suites" not in without and without.count("<img") == 2 * 3
