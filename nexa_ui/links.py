"""Where things are: the app's page for a table, and the Dagster UI's page for a partition of an asset. Plain
Python, so the code location can link its assets to the app without importing Streamlit."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from nexa_core import tables as t

# The app's pages: url path -> (title, the tables it shows or is about: each asset links to its page, each page to
# its assets in the Dagster UI). The first page is the app's front page.
PAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "documents": ("Documents", (t.RAW_DOCUMENTS, t.RAW_QUARANTINE)),
    "teacher": ("Teacher and filters", (t.TEACHER_INPUTS, t.TEACHER_OUTPUTS, t.FILTERED_PAIRS)),
    "sft": ("SFT set", (t.SFT_DATASET, t.FEEDBACK_SET)),
    "answers": (
        "Answers",
        (t.EVAL_PREDICTIONS, t.EVAL_METRICS, t.EVAL_HISTORY, t.STUDENT_BASE, t.STUDENT_CHECKPOINT),
    ),
    "suites": ("Suites", (t.BENCHMARK_SCORES, t.BENCHMARK_HISTORY)),
    "releases": (
        "Releases and leaderboard",
        (t.LEADERBOARD, t.MODEL_RELEASE, t.RELEASE_HISTORY),
    ),
}


def page_of(table: str) -> str | None:
    """The url path of the page that shows `table`, or None."""
    return next((path for path, (_, shown) in PAGES.items() if table in shown), None)


def page_url(ui_url: str, table: str, domain: str | None = None) -> str | None:
    """The app's page that shows `table` (for `domain`, when given); None for a table no page shows."""
    path = page_of(table)
    if path is None:
        return None
    return f"{ui_url.rstrip('/')}/{path}" + (f"?{urlencode({'domain': domain})}" if domain else "")


def asset_url(dagster_url: str, asset: str, domain: str | None = None) -> str:
    """The Dagster UI's page of an asset, on the partition `domain` when given."""
    query = f"?{urlencode({'partition': domain})}" if domain else ""
    return f"{dagster_url.rstrip('/')}/assets/{quote(asset)}{query}"
