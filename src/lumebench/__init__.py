"""lumebench — the LUME (SemEval-2025 Task 4) LLM-unlearning benchmark and toolkit.

Importing it pins the machine-dependent CPU numerics before torch is loaded (see
:mod:`lumebench.numerics`): the same seed gives the same bits on every x86 CPU with AVX2.
"""

from lumebench import numerics as _numerics

_numerics.pin()

__version__ = "0.1.0"
