"""fsv-bench: a benchmark harness for few-shot video classification."""
__version__ = "0.1.0"

