"""Every launched stage's settings are typed: the YAML is the defaults and every key of it is known, a misspelt key
anywhere (the YAML, a request's --set, nexa-run's --set, Dagster run config) is an error naming it with the closest
known keys, a wrong type is an error, and the Dagster config offers every setting with its default and description."""

from dataclasses import MISSING, fields

import dagster as dg
import pytest
import yaml

from nexa_core.recipe import STAGE_CONFIGS, FinetuneConfig, ReadingConfig
from nexa_core.settings import SettingsError, flat, setting_keys
from nexa_core.stage import (
    BenchmarkRequest,
    DistillRequest,
    GenerateRequest,
    MergeRequest,
    ReadRequest,
    SFTRequest,
    TeacherLogitsRequest,
)

REQUESTS = [
    ReadRequest,
    SFTRequest,
    TeacherLogitsRequest,
    DistillRequest,
    GenerateRequest,
    BenchmarkRequest,
    MergeRequest,
]
IDS = [c.__name__ for c in STAGE_CONFIGS]


def typo(key: str) -> str:
    """The key with two letters of its last part swapped (num_train_epochs -> num_trian_epochs)."""
    *parents, leaf = key.split(".")
    i = max(1, len(leaf) // 2)
    misspelt = leaf[: i - 1] + leaf[i] + leaf[i - 1] + leaf[i + 1 :] if len(leaf) > 2 else leaf + "x"
    return ".".join([*parents, misspelt if misspelt != leaf else leaf + "x"])


def test_every_launched_stage_has_its_typed_settings():
    assert {r.settings for r in REQUESTS} == set(STAGE_CONFIGS)


@pytest.mark.parametrize("config", STAGE_CONFIGS, ids=IDS)
def test_every_yaml_key_is_a_known_setting_and_the_defaults_parse(config):
    written = flat(yaml.safe_load(config.default_path().read_text()), "")
    known = set(setting_keys(config))
    assert set(written) <= known, f"{config.defaults_file}: keys no setting has"
    defaults = flat(config.defaults().to_dict())
    for key, value in written.items():  # as the file says, typed
        assert defaults[key] == value, key
    # the YAML's comments are the descriptions: every top-level setting has one
    assert all(config.descriptions().get(f.name) for f in fields(config)), config.descriptions()


@pytest.mark.parametrize("config", STAGE_CONFIGS, ids=IDS)
def test_a_typo_of_every_setting_is_an_error_naming_it_the_stage_and_the_setting(config):
    for key in setting_keys(config):
        wrong = typo(key)
        if wrong in setting_keys(config):
            continue
        with pytest.raises(SettingsError) as error:
            config.load(overrides={wrong: 1})
        message = str(error.value)
        assert config.stage in message and repr(wrong) in message, message
        assert key in message, f"{wrong}: the closest key {key} is not named in {message!r}"


@pytest.mark.parametrize("config", STAGE_CONFIGS, ids=IDS)
def test_a_wrong_type_is_an_error(config):
    for key in [k for k, v in flat(config.defaults().to_dict()).items() if not isinstance(v, dict)]:
        with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
            config.load(overrides={key: {"not": "a value"}})
    with pytest.raises(SettingsError, match="bf16"):
        FinetuneConfig.load(overrides={"bf16": "maybe"})
    assert FinetuneConfig.load(overrides={"learning_rate": "1e-4"}).learning_rate == 1e-4  # YAML 1.1 reads it as text


def test_a_typo_in_a_yaml_file_names_the_file(tmp_path):
    text = FinetuneConfig.default_path().read_text().replace("save_steps:", "save_stpes:")
    (tmp_path / "mine.yaml").write_text(text)
    with pytest.raises(SettingsError, match=r"'save_stpes'.*did you mean save_steps.*mine\.yaml"):
        FinetuneConfig.load(tmp_path / "mine.yaml")


def test_a_kind_of_student_fills_the_unset_settings_and_a_set_one_wins():
    given = FinetuneConfig.load(overrides={"learning_rate": 1e-3})
    assert given.learning_rate == 1e-3 and given.num_train_epochs is None
    real, tiny = given.for_student(built_from_config=False), given.for_student(built_from_config=True)
    assert real.learning_rate == tiny.learning_rate == 1e-3  # set above: wins over both sections
    assert (real.num_train_epochs, tiny.num_train_epochs) == (
        given.pretrained.num_train_epochs,
        given.from_config.num_train_epochs,
    )
    assert ReadingConfig.load(overrides={"student": {"layers": 3}}).student.heads == 4  # a section merged, not replaced


@pytest.mark.parametrize("request_type", REQUESTS, ids=[r.__name__ for r in REQUESTS])
def test_a_stage_refuses_a_misspelt_set_before_it_starts(request_type, capsys):
    key = typo(next(f.name for f in fields(request_type.settings)))
    with pytest.raises(SystemExit):
        request_type.parse(["--domain", "physics", "--set", f"{key}=1", *required_flags(request_type)], "stage")
    assert repr(key) in capsys.readouterr().err


def required_flags(request_type) -> list[str]:
    """Any value for each required flag of a request (the settings are checked before they are used)."""
    flags = []
    for f in fields(request_type):
        if f.name not in ("domain", "overrides") and f.default is f.default_factory is MISSING:
            flags += ["--" + f.name.replace("_", "-"), "7" if "version" in f.name else "x"]
    return flags


def test_nexa_run_refuses_a_misspelt_set_naming_the_closest_settings():
    from nexa_assets.cli import ops_config
    from nexa_assets.definitions import defs

    with pytest.raises(SystemExit, match="num_trian_epochs.*did you mean num_train_epochs"):
        ops_config(defs, "nexa_job", ["student_checkpoint.num_trian_epochs=1"])
    with pytest.raises(SystemExit, match="'lora.rr'.*did you mean lora.r"):
        ops_config(defs, "nexa_job", ["student_checkpoint.lora.rr=8"])
    ops = ops_config(defs, "nexa_job", ["student_checkpoint.lora.r=8", "student_checkpoint.learning_rate=1e-4"])
    assert ops["student_checkpoint"]["config"] == {"lora": {"r": 8}, "learning_rate": 1e-4}


def test_run_config_offers_every_setting_with_its_default_and_refuses_a_typo():
    from nexa_assets.definitions import defs

    job = defs.resolve_job_def("nexa_job")
    nodes = {n.name: n for n in job.graph.node_defs}
    for config in [ReadingConfig, FinetuneConfig]:
        schema = nodes[config.stage].config_schema.config_type.fields
        assert {f.name for f in fields(config)} - {"base_model"} <= set(schema)
        assert schema["seed"].default_value == config.defaults().seed and schema["seed"].description
    lora = nodes["student_checkpoint"].config_schema.config_type.fields["lora"].config_type.fields
    assert lora["r"].default_value == FinetuneConfig.defaults().lora.r
    bad = {"ops": {"student_checkpoint": {"config": {"num_trian_epochs": 1}}}}
    with pytest.raises(dg.DagsterInvalidConfigError, match="num_trian_epochs"):
        dg.validate_run_config(job, bad)


def test_how_often_a_stage_reports_is_not_part_of_what_it_makes():
    given = FinetuneConfig.defaults()
    assert given.replace(progress_seconds=5).digest() == given.digest() != given.replace(seed=1).digest()
