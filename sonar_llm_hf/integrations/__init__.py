"""Integrations with embedding libraries (optional extras): `sentence_transformers` (pip install
"sonar-llm-hf[st]") and `mteb` (pip install "sonar-llm-hf[mteb]"). Importing this package imports neither."""
