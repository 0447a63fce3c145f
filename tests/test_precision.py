"""bf16 on the CPU: chosen where the CPU computes bf16 natively (avx512_bf16, AMX) and on CUDA, fp32 elsewhere;
the record says which, and a model trained in bf16 is saved in bf16."""

import json

import pytest
import torch
from safetensors import safe_open

from nexa_core.models import device
from nexa_core.models.device import use_bf16
from nexa_core.models.load import load_student
from nexa_core.recipe import FinetuneConfig
from nexa_core.train.commit import commit_model
from nexa_core.train.fit import fit
from nexa_core.train.rows import conversation_rows
from nexa_core.train.student import build_default_student

TEXTS = ["Heat flows from a hot body to a cold one.", "The joule is the unit of energy."] * 8


@pytest.mark.parametrize(
    "setting, cuda, flags, expected",
    [
        ("auto", False, {"avx512f", "avx512_bf16"}, True),
        ("auto", False, {"amx_tile", "amx_bf16"}, True),
        ("auto", False, {"avx2", "avx512f"}, False),  # no native bf16: autocast would be slower than fp32
        ("auto", False, set(), False),  # flags unreadable (not Linux)
        (False, False, {"avx512_bf16"}, False),
        ("false", False, {"avx512_bf16"}, False),  # as a string-typed config field carries it
        (True, False, set(), True),
    ],
)
def test_bf16_is_chosen_from_the_cpu_features(setting, cuda, flags, expected):
    assert use_bf16(setting, cuda=cuda, flags=flags) is expected


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "student"
    build_default_student(TEXTS, folder, hidden_size=32, layers=1, heads=2, vocab_size=300)
    return folder


@pytest.mark.parametrize("flags, precision", [({"avx512_bf16"}, "bf16-autocast"), ({"avx2"}, "fp32")])
def test_the_record_and_the_saved_weights_say_how_it_computed(tiny_student, tmp_path, monkeypatch, flags, precision):
    monkeypatch.setattr(device, "cpu_flags", lambda: flags)  # the feature check, stubbed
    model, tokenizer = load_student(str(tiny_student))
    conversations = [[{"role": "user", "content": t}, {"role": "assistant", "content": "yes"}] for t in TEXTS]
    config = FinetuneConfig.load(
        overrides={"max_steps": 2, "save_steps": 100, "logging_steps": 1, "per_device_train_batch_size": 4}
    ).for_student(built_from_config=True)
    computed = set()  # the dtype the body's matmuls produced in the training steps, as the record claims
    model.model.layers[0].mlp.down_proj.register_forward_hook(lambda module, args, out: computed.add(out.dtype))
    fitted = fit(model, tokenizer, conversation_rows(tokenizer, conversations), [], config, tmp_path / "t", "physics")
    record = fitted["record"]
    assert record["precision"] == precision and record["bf16"] is (precision != "fp32")
    assert computed == {torch.bfloat16 if precision == "bf16-autocast" else torch.float32}
    assert record["device"] == "cpu"
    commit_model(fitted["trainer"], tokenizer, tmp_path, "model", dict(record))
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    with safe_open(str(tmp_path / "model" / "model.safetensors"), "pt") as weights:
        dtypes = {str(weights.get_tensor(name).dtype) for name in weights.keys()}
    assert dtypes == ({"torch.bfloat16"} if precision != "fp32" else {"torch.float32"})
    assert manifest.get("saved_dtype") == ("bfloat16" if precision != "fp32" else None)
    reloaded, _ = load_student(str(tmp_path / "model"))  # training reloads it in fp32 whatever it was saved in
    assert {p.dtype for p in reloaded.parameters()} == {torch.float32}
