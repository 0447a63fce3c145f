"""Local folders the code location reads and writes besides Delta: the raw corpus (one folder per
domain) and the reports for people (the leaderboard's HTML page)."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from resources.delta import PROJECT_ROOT


class ReportFolder(dg.ConfigurableResource):
    folder: str = Field(default=str(PROJECT_ROOT / "data" / "reports"), description="Folder of the HTML reports")

    def path(self, name: str) -> Path:
        return Path(self.folder) / name


class RawFolder(dg.ConfigurableResource):
    """The raw root: data/raw/<domain>/ (NEXA_RAW_ROOT), read by raw_documents unless its run config
    names another folder."""

    folder: str = Field(default=str(PROJECT_ROOT / "data" / "raw"), description="Folder of the domain folders")
