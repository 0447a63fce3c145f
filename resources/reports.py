"""Where the reports for people go: the leaderboard's HTML page, in a local folder."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from resources.delta import PROJECT_ROOT


class ReportFolder(dg.ConfigurableResource):
    folder: str = Field(default=str(PROJECT_ROOT / "data" / "reports"), description="Folder of the HTML reports")

    def path(self, name: str) -> Path:
        return Path(self.folder) / name
