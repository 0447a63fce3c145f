"""nexa-ui: the inspection app, read-only views over the Delta tables (Streamlit). The queries (queries.py) and
the links (links.py) are plain Python; only the app script and its views import Streamlit, and nothing here imports
Dagster but the command (cli.py), which reads the graph's own settings."""
