"""Every setting read from the environment, in one place, with the defaults the README documents."""

import dagster as dg
import pytest
from conftest import PROJECT
from dagster_deltalake import LocalConfig

from resources.environment import Environment


def test_defaults_when_nothing_is_set(tmp_path):
    env = Environment.read({})
    assert env.dagster_home == PROJECT / ".dagster_home" and env.raw_root == PROJECT / "data" / "raw"
    assert env.delta_root == str(PROJECT / "data" / "delta") and isinstance(env.delta_storage, LocalConfig)
    assert env.storage_options == {}
    assert env.artifact_root == str(PROJECT / "data" / "artifacts")
    assert env.report_dir == str(PROJECT / "data" / "reports")
    assert env.tracking_uri == f"sqlite:///{PROJECT / 'data' / 'mlflow.db'}"
    assert (env.max_rounds, env.min_improvement) == (3, 0.0)
    assert env.teacher.backend == "heuristic" and env.judge.backend == "none"


def test_each_variable_reaches_its_setting(tmp_path):
    env = Environment.read(
        {
            "DAGSTER_HOME": str(tmp_path / "home"),
            "NEXA_RAW_ROOT": str(tmp_path / "raw"),
            "NEXA_DELTA_ROOT": str(tmp_path / "delta"),
            "NEXA_ARTIFACT_ROOT": "s3://bucket/artifacts",
            "NEXA_REPORT_DIR": str(tmp_path / "reports"),
            "MLFLOW_TRACKING_URI": "http://mlflow:5000",
            "NEXA_MAX_ROUNDS": "5",
            "NEXA_MIN_IMPROVEMENT": "0.01",
            "NEXA_TEACHER_BASE_URL": "http://vllm:8000/v1",
            "NEXA_TEACHER_MODEL": "qwen",
            "NEXA_TEACHER_MODE": "batch",
            "NEXA_TEACHER_OPTIONS": '{"max_concurrency": 64}',
            "NEXA_JUDGE_BASE_URL": "http://judge/v1",
            "NEXA_JUDGE_API_KEY_ENV": "JUDGE_KEY",
        }
    )
    assert (env.dagster_home, env.raw_root, env.delta_root) == (
        tmp_path / "home",
        tmp_path / "raw",
        str(tmp_path / "delta"),
    )
    assert (env.artifact_root, env.report_dir, env.tracking_uri) == (
        "s3://bucket/artifacts",
        str(tmp_path / "reports"),
        "http://mlflow:5000",
    )
    assert (env.max_rounds, env.min_improvement) == (5, 0.01)
    teacher, judge = env.teacher, env.judge
    assert (teacher.backend, teacher.base_url, teacher.model, teacher.mode, teacher.max_concurrency) == (
        "openai",
        "http://vllm:8000/v1",
        "qwen",
        "batch",
        64,
    )
    assert judge.backend == "openai" and judge.model == "gpt-4o-mini"
    # the keys travel by reference: the variable's name, never its value
    assert isinstance(teacher.api_key, dg.EnvVar) and teacher.api_key == "OPENAI_API_KEY"
    assert isinstance(judge.api_key, dg.EnvVar) and judge.api_key == "JUDGE_KEY"
    assert not (tmp_path / "delta").exists()  # reading the settings creates nothing


def test_bad_values_say_which_variable(tmp_path):
    with pytest.raises(ValueError, match="NEXA_MAX_ROUNDS='three' is not an integer"):
        Environment.read({"NEXA_MAX_ROUNDS": "three"})
    with pytest.raises(ValueError, match="NEXA_MIN_IMPROVEMENT='-' is not a number"):
        Environment.read({"NEXA_MIN_IMPROVEMENT": "-"})
    with pytest.raises(ValueError, match="NEXA_TEACHER_OPTIONS must not hold api_key"):
        Environment.read({"NEXA_TEACHER_BASE_URL": "http://x/v1", "NEXA_TEACHER_OPTIONS": '{"api_key": "sk-1"}'})


def test_the_launcher_comes_from_the_file_nexa_launcher_config_names(tmp_path):
    from resources.launcher import TrainingLauncher

    config = tmp_path / "launcher.yaml"
    config.write_text("kind: kubernetes\nimage: nexa-trainer:1\ngpus: 4\nartifact_root: /artifacts\n")
    env = Environment.read({"NEXA_LAUNCHER_CONFIG": str(config)})
    launcher = TrainingLauncher(**{**env.launcher, "artifact_root": env.artifact_root})
    assert (launcher.kind, launcher.image, launcher.gpus, launcher.artifact_root) == (
        "kubernetes",
        "nexa-trainer:1",
        4,
        "/artifacts",
    )
    assert Environment.read({"NEXA_LAUNCHER_CONFIG": str(config), "NEXA_ARTIFACT_ROOT": "/x"}).artifact_root == "/x"
    config.write_text("kind: kubernetes\ngpu: 4\n")
    with pytest.raises(ValueError, match=r"unknown launcher settings \['gpu'\]"):
        Environment.read({"NEXA_LAUNCHER_CONFIG": str(config)})
    with pytest.raises(ValueError, match="no such file"):
        Environment.read({"NEXA_LAUNCHER_CONFIG": str(tmp_path / "missing.yaml")})
