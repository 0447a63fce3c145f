"""The inspection app's script (`nexa-ui` runs it with `streamlit run`): the sidebar's domain and round, then the
chosen page of nexa_ui/views/."""

from pathlib import Path

import streamlit as st

from nexa_core.delta import DeltaRoot
from nexa_ui import links, view

st.set_page_config(page_title="NexaCompute: the data", layout="wide")
settings = view.settings()
views = Path(__file__).parent / "views"
navigation = st.navigation(
    [
        st.Page(views / f"{path}.py", title=title, url_path=path, default=i == 0)
        for i, (path, (title, _)) in enumerate(links.PAGES.items())
    ]
)
view.choose_partition(DeltaRoot(settings.delta_root, settings.storage_options))
navigation.run()
