"""The evaluation on recorded GSM8K answers (docs/evaluation.md); each script runs as `python -m eval.<name>`."""
