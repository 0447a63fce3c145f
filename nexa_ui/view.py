"""What every page shares: the settings nexa-ui started the app with, the domain and round chosen in the sidebar,
the links to the Dagster UI, a message in place of a table that is not there, and paging. Streamlit only here and
in the pages; the data comes from nexa_ui.queries."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import polars as pl
import streamlit as st

from nexa_core import tables as t
from nexa_core.delta import DeltaRoot
from nexa_ui import links, queries
from nexa_ui.settings import UiSettings

LATEST = "latest (the tables as they are)"
UNPARTITIONED = {t.LEADERBOARD}  # every domain's: its asset page has no partition


def settings() -> UiSettings:
    """The settings nexa-ui gave the script; without them the page says how to start the app, and stops."""
    try:
        return UiSettings.parse(sys.argv[1:])
    except SystemExit:
        st.error("Start the app with `nexa-ui` (it reads the graph's Delta root and the Dagster UI's address).")
        st.stop()


def choose_partition(root: DeltaRoot) -> None:
    """The sidebar: which domain (kept in the URL as ?domain=) and which round; the choice goes to the page."""
    found = queries.domains(root)
    if not found:
        st.info(f"No domain has been run under {root.root_uri} yet: run one (e.g. `nexa-run physics`) and reload.")
        st.stop()
    wanted = st.query_params.get("domain")
    domain = st.sidebar.selectbox("Domain", found, index=found.index(wanted) if wanted in found else 0, key="domain")
    st.query_params["domain"] = domain
    rounds = queries.rounds(root, domain)
    labels = [LATEST] + [
        f"round {r['round']} (teacher_inputs v{r['version']}, {r['started_at']:%Y-%m-%d %H:%M})"
        for r in rounds.iter_rows(named=True)
    ]
    chosen = st.sidebar.selectbox("Round", range(len(labels)), format_func=labels.__getitem__, key="round")
    as_of = rounds["as_of"][chosen - 1] if chosen else None
    st.sidebar.caption(
        "Every table as it was at the end of the chosen round (Delta time travel); the newest round is the "
        "tables as they are."
    )
    st.session_state["partition"] = queries.Partition(root, domain, as_of)


def partition() -> queries.Partition:
    return st.session_state["partition"]


def header(path: str) -> queries.Partition:
    """The page's title and its tables' pages in the Dagster UI, for the chosen domain."""
    part = partition()
    title, tables = links.PAGES[path]
    st.title(title)
    dagster_url = settings().dagster_url
    shown = [
        f"[{name}]({links.asset_url(dagster_url, name, None if name in UNPARTITIONED else part.domain)})"
        for name in tables
    ]
    st.caption(f"Domain **{part.domain}**{part.when()} · in the Dagster UI: " + " · ".join(shown))
    return part


@contextmanager
def shown() -> Iterator[None]:
    """A table that is not there, or an empty partition, is a message in place of the section."""
    try:
        yield
    except queries.NotThere as exc:
        st.info(str(exc))


def paged(frame: pl.LazyFrame, key: str, size: int = queries.PAGE_ROWS) -> queries.Page:
    """One page of `frame` as a table, with a page number under it to move through the rest."""
    pages = max(1, -(-queries.count(frame) // size))
    table = st.container()
    number, where = st.columns([1, 5], vertical_alignment="center")
    chosen = number.number_input(
        f"Page (of {pages})", min_value=1, max_value=pages, value=1, key=key, label_visibility="collapsed"
    )
    page = queries.page(frame, int(chosen), size)
    table.dataframe(page.rows, hide_index=True)
    last = page.first + page.rows.height - 1 if page.rows.height else 0
    where.caption(f"page {page.number} of {page.pages}: rows {page.first}-{last} of {page.total}")
    return page
