"""One source for each setting: every Dagster config class (or resource) exposes each field of its
nexa_core dataclass under the same name with the same default, and builds that dataclass back."""

from dataclasses import asdict, fields, is_dataclass

import pytest

from nexa_assets.distill import FilterSettings, MinHashSettings, PromptSettings, RawSettings, SplitSettings
from nexa_assets.evaluate import FeedbackSettings
from nexa_assets.release import ReleaseSettings
from nexa_core.data.documents import LoadLimits
from nexa_core.distill.dedup import MinHashConfig
from nexa_core.distill.filters import FilterConfig
from nexa_core.distill.sft import SplitConfig
from nexa_core.distill.teacher_inputs import PromptConfig
from nexa_core.evaluate.feedback import FeedbackConfig
from nexa_core.release.gate import GateConfig
from nexa_core.settings import from_settings
from nexa_core.teacher import CollectPolicy
from resources.teacher import TeacherResource

# (settings class, its nexa_core dataclass, the settings' own fields: what the asset or resource resolves itself)
PAIRS = [
    (RawSettings, LoadLimits, {"raw_root"}),
    (PromptSettings, PromptConfig, {"template", "feedback"}),
    (FilterSettings, FilterConfig, set()),
    (MinHashSettings, MinHashConfig, set()),
    (SplitSettings, SplitConfig, set()),
    (FeedbackSettings, FeedbackConfig, {"template"}),
    (ReleaseSettings, GateConfig, {"suite_root"}),
    (
        TeacherResource,
        CollectPolicy,
        {
            "backend",
            "model",
            "base_url",
            "api_key",
            "temperature",
            "max_tokens",
            "timeout_s",
            "prices",
            "store_for_recovery",
        },
    ),
]


def plain(value):
    """Tuples as lists: a dg.Config field holds a list where the dataclass holds a tuple."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("settings, core, own", PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_settings_expose_every_core_field_with_the_core_default(settings, core, own):
    exposed = settings.model_fields
    assert set(exposed) - own == {f.name for f in fields(core)}, "fields only one side has"
    defaults = core()
    for f in fields(core):
        value, expected = exposed[f.name].get_default(call_default_factory=True), getattr(defaults, f.name)
        if is_dataclass(expected):  # a nested settings class: compared as the dataclass it builds
            value = from_settings(type(expected), value)
        assert plain(value) == plain(expected), f"{settings.__name__}.{f.name} and {core.__name__}.{f.name} differ"
    assert plain(asdict(from_settings(core, settings()))) == plain(asdict(defaults))


def test_from_settings_carries_set_values_into_nested_dataclasses():
    cfg = from_settings(FilterConfig, FilterSettings(min_grounding=0.9, minhash=MinHashSettings(threshold=0.8)))
    assert cfg.min_grounding == 0.9 and cfg.minhash == MinHashConfig(threshold=0.8)
    policy = TeacherResource(batch_max_rounds=5, unusable={"length": "quarantine"}).policy()
    assert policy.batch_max_rounds == 5 and policy.unusable == {"length": "quarantine"}
    with pytest.raises(AttributeError, match="max_file_bytes"):  # a settings object that lacks a field
        from_settings(LoadLimits, PromptSettings())
