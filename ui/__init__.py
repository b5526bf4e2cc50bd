"""The Streamlit front end: search, listen, explore similar tracks, talk with the model. Nothing imports it."""
