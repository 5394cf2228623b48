"""Can the Hugging Face hub be reached? One short probe before any work, instead of minutes of retries.

Offline, ``huggingface_hub`` retries every request (5 times, waiting 1, 2, 4, 8, 8 s: about 50 s and
a dozen "Retrying in Ns" lines per model) before transformers gives up; ``--mmlu cais/mmlu`` failed
only after generation and the MIA attacks had run. :func:`require` is called at the border (the
checks of ``--model`` / ``--mmlu`` and of run configs) and before every hub download:

- the hub answers (one ``HEAD`` of ``HF_ENDPOINT``, default https://huggingface.co, within
  ``LUME_NET_TIMEOUT`` seconds, default 10; any HTTP answer counts) -> go on;
- it does not, or ``HF_HUB_OFFLINE`` is set, but every file needed is in the local hub cache -> go
  on offline (``HF_HUB_OFFLINE`` is switched on for this process, so nothing retries);
- otherwise one :class:`~lumebench.errors.LumeError` line saying what to do.
"""

from __future__ import annotations

import functools
import os
import urllib.error
import urllib.request
from typing import Iterable

from lumebench.errors import LumeError

_TRUE = {"1", "ON", "YES", "TRUE"}  # what huggingface_hub.constants reads as true


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set, as huggingface_hub reads them."""
    return any(os.environ.get(v, "").upper() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _timeout() -> float:
    try:
        return float(os.environ.get("LUME_NET_TIMEOUT", "10"))
    except ValueError:
        return 10.0


@functools.lru_cache(maxsize=4)
def _probe(url: str, timeout: float) -> str | None:
    """None when ``url`` answers within ``timeout`` seconds, else why not."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # it answered (a mirror's root may be a 404)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        return " ".join(str(reason).split())[:120] or type(e).__name__


def reachable() -> bool:
    """The hub answers one request within the timeout (asked once per process)."""
    return _probe(endpoint(), _timeout()) is None


def _cached(repo_id: str, filenames: Iterable[str], repo_type: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return all(isinstance(try_to_load_from_cache(repo_id, f, repo_type=repo_type), str) for f in filenames)


def go_offline() -> None:
    """Offline mode for the rest of this process (huggingface_hub reads its constant at each call)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import constants
    except ImportError:
        return
    constants.HF_HUB_OFFLINE = True


def require(repo_id: str, filenames: Iterable[str] = ("config.json",), *, repo_type: str = "model",
            hint: str = "", **where) -> None:
    """Make sure ``repo_id`` can be had (see the module docstring) or raise one line; ``hint`` says
    what to use instead offline, ``where`` (``field``, ``path``, ``line``) where the id came from."""
    if not offline() and reachable():
        return
    if _cached(repo_id, list(filenames), repo_type):
        go_offline()
        return
    why = "HF_HUB_OFFLINE is set" if offline() else f"{endpoint()}: {_probe(endpoint(), _timeout())}"
    raise LumeError(f"{repo_id} is on the Hugging Face hub, unreachable offline here ({why}), and not in the "
                    f"local hub cache{'; ' + hint if hint else ''}", **where)
