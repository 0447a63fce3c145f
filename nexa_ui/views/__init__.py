"""The app's pages, each a Streamlit script that nexa_ui/app.py runs (st.navigation)."""
