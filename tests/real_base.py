"""The real default base in tests: SmolLM2-135M-Instruct converted once per test session, in a folder
every xdist worker shares (the conversion takes a lock of its own)."""

import os

from nexa_core.models.bases import resolve_base

SMOLLM2 = "smollm2-135m-instruct"


def shared_root(tmp_path_factory):
    """A folder of this test session that every xdist worker sees."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


def converted_base(tmp_path_factory) -> dict:
    bases_dir = shared_root(tmp_path_factory) / "bases"
    return {"folder": resolve_base(SMOLLM2, bases_dir), "bases_dir": bases_dir}
