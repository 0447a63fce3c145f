"""Progress a user can read, and every training run's speed: a fit logs progress lines (steps done of all,
tokens/s, time left) every progress_seconds, which nexa-run prints as they reach the run's event log; the fit's
record counts the tokens it fed (real, padding, labelled) and the time in its optimizer steps, and the student_base
and student_checkpoint rows and the leaderboard carry tokens/s and MFU against the GEMM roof measured here."""

import json
import time

import dagster as dg
import polars as pl
import pytest
from test_leaderboard import _evaluation

from nexa_core.models.speed import ModelShape, gemm_roof
from nexa_core.progress import Progress, parse_progress, progress_line
from nexa_core.recipe import FinetuneConfig, ReadingConfig
from nexa_core.train.checkpoints import base_row, checkpoint_row

QUESTIONS = [[{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {'x ' * i}{i}."}]
             for i in range(8)]  # fmt: skip
SMALL = {"hidden_size": 64, "layers": 2, "heads": 2, "vocab_size": 1024}


def test_a_progress_line_reads_back_and_its_time_left_follows_the_rate():
    line = progress_line("student_base", "physics", "step", 30, 120, 214.6, 3725)
    assert line == "partition physics: student_base step 30/120 (25%), 215 tokens/s, 1h02m05s left"
    assert parse_progress(line) == {
        "stage": "student_base",
        "domain": "physics",
        "unit": "step",
        "done": 30,
        "total": 120,
        "tokens_per_second": 215.0,
        "seconds_left": 3725,
    }
    assert parse_progress("partition physics: reading 3 documents, 4000 tokens") is None
    lines = []
    progress = Progress("eval_predictions", "physics", 5, lines.append, every=0, unit="batch")
    start = time.monotonic()
    for batch in (1, 2):
        time.sleep(0.6)
        progress.update(batch, tokens=100)
    elapsed = time.monotonic() - start
    second = parse_progress(lines[-1])
    assert len(lines) == 2 and second["unit"] == "batch" and (second["done"], second["total"]) == (2, 5)
    assert abs(second["seconds_left"] - 3 * elapsed / 2) <= 1  # three batches left at the rate so far
    assert abs(second["tokens_per_second"] - 200 / elapsed) <= 0.1 * 200 / elapsed + 1
    quiet = []
    sparse = Progress("eval_predictions", "physics", 5, quiet.append, every=3600)
    sparse.update(1, 10)
    assert quiet == []  # not due yet


def test_a_fit_reports_progress_and_records_the_tokens_it_fed_and_its_speed(tmp_path):
    from nexa_core.models.load import load_student
    from nexa_core.train.fit import fit
    from nexa_core.train.rows import conversation_rows
    from nexa_core.train.student import build_default_student

    texts = [m["content"] for c in QUESTIONS for m in c]
    model, tokenizer = load_student(str(build_default_student(texts * 4, tmp_path / "m", vocab_size=300)))
    rows = conversation_rows(tokenizer, QUESTIONS)
    steps = 6  # one batch of all eight rows per step: every step feeds them all, padded to the longest
    config = FinetuneConfig.load(
        overrides={
            "max_steps": steps,
            "packing": False,
            "per_device_train_batch_size": 8,
            "progress_seconds": 0,
            "save_steps": 3,
            "eval_steps": 3,
        }
    )
    lines = []
    record = fit(model, tokenizer, rows, rows[:2], config, tmp_path / "run", "physics", log=lines.append)["record"]
    progress = [p for p in map(parse_progress, lines) if p]
    assert [p["done"] for p in progress] == list(range(1, steps + 1)), lines
    assert all(
        p["total"] == steps and p["stage"] == "student_checkpoint" and p["domain"] == "physics" for p in progress
    )
    assert all(p["tokens_per_second"] > 0 for p in progress) and progress[-1]["seconds_left"] == 0

    lengths = [len(r["input_ids"]) for r in rows]
    real, fed = steps * sum(lengths), steps * len(rows) * max(lengths)
    labelled = steps * sum(sum(label != -100 for label in r["labels"][1:]) for r in rows)
    assert (record["real_tokens"], record["fed_tokens"]) == (real, fed)
    assert record["padding_share"] == pytest.approx(1 - real / fed) and record["padding_share"] > 0
    shape = ModelShape.of(model)
    pairs = steps * sum(n * (n + 1) // 2 for n in lengths)
    assert record["head_positions"] == "labelled"  # CompletionSFTTrainer on a CPU: the head where labels are
    assert record["model_flops"] == pytest.approx(shape.training_flops(real, pairs, labelled))
    assert shape.training_flops(real, pairs, labelled) == pytest.approx(3 * shape.forward_flops(real, pairs, labelled))
    wall = record["wall_seconds"]
    assert record["tokens_per_second"] == pytest.approx(real / wall)
    assert 0 < record["model_seconds"] < wall
    assert record["model_seconds"] + record["outside_seconds"] == pytest.approx(wall)
    # two evaluations and two trainer saves (steps 3 and 6), timed apart from the steps
    assert record["eval_seconds"] > 0 and record["save_seconds"] > 0
    assert record["eval_seconds"] + record["save_seconds"] < record["outside_seconds"]
    assert record["gemm_tflops"] > 0 and record["mfu"] == pytest.approx(
        record["model_flops"] / wall / (record["gemm_tflops"] * 1e12)
    )
    assert 0 < record["mfu"] < 1


def test_stage_rows_and_the_leaderboard_carry_tokens_per_second_and_mfu(tmp_path):
    from nexa_core.evaluate.leaderboard import leaderboard_markdown, rank_checkpoints
    from nexa_core.train.pretrain import read_corpus
    from nexa_core.train.trainer import train

    documents = [f"Sentence {i} says the speed of light is a constant. It is {i} times told." for i in range(12)]
    reading = ReadingConfig.load(overrides={"base_model": "nexa-tiny-llama", "max_steps": 3, "student": SMALL})
    read = read_corpus(reading, documents, tmp_path / "read", "physics", tmp_path / "bases", log=lambda m: None)
    base = base_row("physics", read, 1, reading.digest()).row(0, named=True)
    assert base["tokens_per_second"] > 0 and 0 < base["mfu"] < 1 and base["gemm_tflops"] > 0
    assert base["padding_share"] == pytest.approx(read["padding_share"])

    settings = FinetuneConfig.load(overrides={"base_model": read["model_path"], "max_steps": 3, "progress_seconds": 0})
    splits = {name: pl.DataFrame({"messages": QUESTIONS}) for name in ("train", "validation")}
    lines = []
    record = train(settings, splits, tmp_path / "sft", "physics", log=lines.append)
    assert [parse_progress(line)["done"] for line in lines if parse_progress(line)] == [1, 2, 3]
    row = checkpoint_row("physics", {**record, "sft_version": 1}, base, 1, "hash", 0, str(tmp_path / "sft"), 0.0, None)
    checkpoint = row.row(0, named=True)
    assert checkpoint["tokens_per_second"] == pytest.approx(record["tokens_per_second"]) and record["real_tokens"] > 0
    assert 0 < checkpoint["mfu"] < 1 and checkpoint["gemm_tflops"] > 0
    assert json.loads(checkpoint["settings"])["progress_seconds"] == 0

    from nexa_core import schemas

    history = pl.DataFrame(
        _evaluation("physics", 0, checkpoint["checkpoint_id"], {"token_f1": 0.5}, hours=1), schema=schemas.EVAL_HISTORY
    )
    ranked = rank_checkpoints(history, None, row)
    assert ranked["mfu"].to_list() == [checkpoint["mfu"]]
    table = leaderboard_markdown(ranked)
    assert "| tokens/s | MFU |" in table and f"| {100 * checkpoint['mfu']:.1f}% |" in table
    assert rank_checkpoints(history)["mfu"].to_list() == [None]  # no checkpoint rows: shown as –


def test_the_gemm_roof_is_measured_once_per_shape_and_precision():
    gemm_roof.cache_clear()
    first = gemm_roof(64, 64, 256, False)
    assert first > 0 and gemm_roof(64, 64, 256, False) == first and gemm_roof.cache_info().hits == 1


PIPES_STAGE = """
from dagster_pipes import open_dagster_pipes
from nexa_core.progress import progress_line
with open_dagster_pipes() as pipes:
    pipes.log.info("partition physics: reading 3 documents")
    pipes.log.info(progress_line("student_base", "physics", "step", 1, 4, 120.0, 9))
    pipes.log.info(progress_line("student_base", "physics", "step", 4, 4, 130.0, 0))
"""


def test_nexa_run_prints_a_launched_stages_progress_lines_from_the_event_log(tmp_path, capsys):
    """A stage launched through Pipes logs progress: its lines reach the run's event log and, through nexa-run's
    listener, the terminal; its other lines stay in the log."""
    import sys

    from conftest import PROJECT

    from nexa_assets.cli import run_printing_progress

    @dg.asset(partitions_def=dg.StaticPartitionsDefinition(["physics"]))
    def student_base(context: dg.AssetExecutionContext):
        client = dg.PipesSubprocessClient(cwd=str(PROJECT))
        return client.run(context=context, command=[sys.executable, "-c", PIPES_STAGE]).get_materialize_result()

    job = dg.Definitions(assets=[student_base], jobs=[dg.define_asset_job("read", [student_base])]).resolve_job_def(
        "read"
    )
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = run_printing_progress(job, "physics", instance, quiet)
        assert result.success
        logged = [e.user_message for e in instance.all_logs(result.run_id)]
    printed = capsys.readouterr().out.splitlines()
    progress = [parse_progress(line) for line in printed]
    assert [(p["done"], p["tokens_per_second"], p["seconds_left"]) for p in progress] == [(1, 120.0, 9), (4, 130.0, 0)]
    assert not any("reading 3 documents" in line for line in printed)
    assert any("reading 3 documents" in m for m in logged) and sum(bool(parse_progress(m)) for m in logged) == 2
