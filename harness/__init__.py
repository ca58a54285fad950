"""fsv-bench: a benchmark harness for few-shot video classification."""
__version__ = "0.1.0"

from harness import threads as _threads  # noqa: F401,E402  (sets OMP_WAIT_POLICY before PyTorch starts)
