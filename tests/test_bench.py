"""Every benchmark under bench/ runs at its --smoke size, so none can break unnoticed. Each must print the
machine and the command first, and its own figures beside its baseline's from the same run."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
HELPERS = ("corpus.py", "isolated.py", "teacher_distilabel.py")  # imported by the benchmarks, not run alone
BENCHES = sorted(p.name for p in (PROJECT / "bench").glob("*.py") if p.name not in HELPERS)


@pytest.fixture(scope="module")
def physics_data(tmp_path_factory):
    """The physics data bench/corpus.py builds, shared by the training, generation and learning benches."""
    return str(tmp_path_factory.mktemp("bench") / "physics.json")


def smoke(script: str, *args: str) -> str:
    run = subprocess.run(
        [sys.executable, f"bench/{script}", "--smoke", *args], cwd=PROJECT, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert run.stdout.startswith("machine: ") and f"command: bench/{script} --smoke" in run.stdout
    return run.stdout


def test_every_benchmark_has_a_smoke_test_here():
    source = Path(__file__).read_text()
    assert BENCHES and all(re.search(rf'smoke\(\s*"{re.escape(name)}"', source) for name in BENCHES), BENCHES


def test_training_benchmark_runs_both_trainers_and_both_fine_tunes(physics_data):
    out = smoke(
        "train.py",
        "--examples",
        physics_data,
    )
    for name in ("trl-defaults", "nexa"):
        for finetune in ("lora", "full"):
            assert f"{name:18s} {finetune:8s}" in out and "FAILED" not in out
    # each fine-tune's baseline row is 1.00x by definition (the other rows are measured ratios: one can round to 1.00x)
    baselines = [line for line in out.splitlines() if line.startswith("trl-defaults ")]
    assert len(baselines) == 2 and all(" 1.00x " in line for line in baselines), out
    assert all(re.search(r" \d+\.\d\dx ", line) for line in out.splitlines() if line.startswith("nexa ")), out


def test_roofline_benchmark_sets_every_stage_against_the_gemm_rate_measured_here(physics_data):
    out = smoke("roofline.py", "--examples", physics_data)
    assert re.search(r"\ncpu: .+, AMX (yes|no), avx512_bf16 (yes|no), torch threads \d+, \d+ cores\n", out), out
    assert re.search(r"\nSFT 8 x 128 +MLP gate, up \(1024x64x256\) +\d+\.\d{3} +\d+\.\d{3}\n", out), out
    assert "a forward pass, GEMMs only" in out and "bf16 2048x2048x2048" in out
    number = r"\d[\d.e+-]*"
    for stage in ("reading", "SFT", "KD", "generation"):
        row = re.search(
            rf"\n{stage} +\d+ +{number} +(?P<rate>{number}) +{number} +(?P<roof>{number}) +(?P<mfu>{number})% "
            rf"+(?P<padding>{number})% +{number} \( *\d+%\)( +-?{number}){{4}}   \S",
            out,
        )
        assert row and float(row["rate"]) > 0 and float(row["roof"]) > 0 and float(row["mfu"]) > 0, (stage, out)
        assert 0 <= float(row["padding"]) < 100
    assert "target MFU >= 50%" in out and "target 2x this run's new tokens/s" in out


def test_generation_benchmark_runs_todays_path_against_the_fast_one_for_each_role(physics_data):
    out = smoke("generate.py", "--examples", physics_data)
    for role in ("student", "base"):  # the config-built student's base is the model after reading: no read row
        assert re.search(rf"^{role} +8 +\d+ .* 8/8$", out, re.M), out  # the same answers on both paths
    assert re.search(r"^all roles +16 .* 16/16 ", out, re.M), out
    assert "read back none" in out and "read back base" in out  # the answer cache: cold, then a new checkpoint
    assert "model.generate, one at a time" in out and "nexa_core.evaluate.generate, batch 4" in out


def test_learning_benchmark_scores_student_and_base(physics_data):
    out = smoke("learning.py", "--examples", physics_data)
    assert "token_f1" in out and "exact_match" in out and "base" in out and "student" in out
    assert re.search(r"student +continuing the prefix as text +\d+ +answering in the chat prompt +\d+", out)


def test_distill_benchmark_runs_against_datasketch():
    out = smoke("distill.py")
    assert "datasketch MinHashLSH" in out and "ratio at n=2000" in out


def test_teacher_benchmark_runs_against_a_real_local_server():
    out = smoke("teacher.py")
    assert "plain sequential loop" in out and "% bound" in out


@pytest.mark.slow
def test_feedback_round_benchmark_runs_at_smoke_size():
    out = smoke("feedback_round.py")
    for round_ in (0, 1):  # both rounds scored on the test split and the suites, beside the base
        assert re.search(rf"physics +{round_} test token F1 +\d+ +\d\.\d{{3}} \[", out), out
        assert re.search(rf"physics +{round_} suite acc_norm +\d+ ", out), out
    assert "Topics round 0 found weak" in out


@pytest.mark.slow
def test_parallel_runs_benchmark_checks_every_table_after_runs_at_once():
    out = smoke("parallel_runs.py")
    assert "1 run alone" in out and "2 runs at once" in out and "runs/min" in out
    assert "every table holds each of the 2 domains' rows" in out


def test_distillation_benchmark_runs_at_smoke_size():
    out = smoke("distill_kd.py")
    for role in ("student", "pruned_sft", "teacher", "base"):  # every model scored, with an interval
        assert re.search(rf"\| {role} \| \d+\.\dM \| \d+ \| \d\.\d{{3}} \[", out), out
    assert "keeps" in out and "against SFT alone" in out
    assert re.search(r"k +2: teacher mass 0\.\d{3}  KL from top k \d+\.\d{4}  full KL \d+\.\d{4}", out), out
    # a second student, trained on the top 2 of a second cache, scored beside the first
    assert re.search(r"students trained on the teacher's top k", out) and re.search(r"\n  2 +\d\.\d{3} \[", out), out


def test_pair_filters_benchmark_counts_each_reason_beside_its_baseline():
    out = smoke("pair_filters.py")
    assert re.search(r"\nkept +\d+ +\d+ +\d+\n", out) and "baseline " in out and "pairs, new filters" in out
    for reason in ("no_content_word", "function_word_answer", "cut_mid_phrase", "answer_in_question"):
        assert re.search(rf"\n{reason} +0 +\d+ +\d+\n", out), out  # the baseline had no such filter
    assert re.search(r"restatements of the \d+ passages", out) and re.search(r"\n  kept +[1-9]\d*\n", out), out


@pytest.mark.slow
def test_realtext_benchmark_reads_a_new_raw_folder_and_scores_human_questions_and_forgetting():
    out = smoke("realtext.py")
    assert re.search(r"\ncpu: .+, AMX (yes|no), avx512_bf16 (yes|no), torch threads \d+\n", out), out
    assert "tests/fixtures/realtext as a new raw folder" in out  # the project's own fixture, not SciQ
    interval = r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]"
    for questions in ("physics (read)", "chemistry (not read)"):  # the domain's and the forgetting questions
        for measure in ("multiple choice acc", "multiple choice acc_norm", "answer token F1", "answer contained"):
            row = rf"\n{re.escape(questions)} +{measure} +\d+  {interval} +{interval} +(lift|overlap|below)\n"
            assert re.search(row, out), (questions, measure, out)
    assert "physics multiple-choice acc interval wholly above the base's: " in out
    assert len(re.findall(rf"student {interval}, base {interval}: (not below|BELOW)", out)) == 4, out


def test_realtext_benchmark_says_where_sciq_is_expected_when_it_is_absent(tmp_path):
    run = subprocess.run(
        [sys.executable, "bench/realtext.py", "physics", "--paragraphs", str(tmp_path / "none.jsonl")],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0 and f"no paragraphs file at {tmp_path / 'none.jsonl'}" in run.stderr
    assert "../shared/realtext/" in run.stderr and "--smoke" in run.stderr
