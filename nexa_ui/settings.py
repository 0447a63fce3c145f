"""What the app is started with, as arguments of its script (`streamlit run app.py -- ARGS`): nexa-ui resolves them
from the graph's own settings (resources/environment.py) and hands them over, so the app reads no environment
variable and imports no Dagster."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class UiSettings:
    delta_root: str  # a folder or s3://bucket/prefix, as NEXA_DELTA_ROOT
    dagster_url: str  # the Dagster UI the views link to
    storage_options: dict[str, str] = field(default_factory=dict)  # deltalake's, for an s3:// root (no secrets)

    def argv(self) -> list[str]:
        return [
            "--delta-root",
            self.delta_root,
            "--dagster-url",
            self.dagster_url,
            "--storage-options",
            json.dumps(self.storage_options),
        ]

    @classmethod
    def parse(cls, argv: list[str]) -> UiSettings:
        parser = argparse.ArgumentParser(prog="nexa_ui/app.py", description="Started by nexa-ui.")
        parser.add_argument("--delta-root", required=True)
        parser.add_argument("--dagster-url", required=True)
        parser.add_argument("--storage-options", default="{}")
        args = parser.parse_args(argv)
        return cls(args.delta_root, args.dagster_url, json.loads(args.storage_options))
