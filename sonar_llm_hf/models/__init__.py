"""The model code that travels to the Hub as remote code: exactly the files of this folder, flat, relative imports.

`save_pretrained` copies each model class's file and the files it imports from here (never this `__init__.py`), so
a saved folder runs with `trust_remote_code=True` where this package is not installed. Files here import only the
standard library, torch, transformers, tokenizers and huggingface_hub (optional packages through `importlib`).
One exception: `sentence_transformers_sonar.py` is sentence-transformers' module for encoder folders; it imports
sentence_transformers, and the integration (not `save_pretrained`) copies it into a folder.
"""
