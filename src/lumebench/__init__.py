"""lumebench — the LUME (SemEval-2025 Task 4) LLM-unlearning benchmark and toolkit."""

__version__ = "0.1.0"
