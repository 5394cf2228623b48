"""User-facing errors.

Anything the user can fix (a malformed file, an unknown model name, a missing package) is raised as
a :class:`LumeError` whose message is one line naming the file, line and field where that applies.
The CLI prints it as ``error: <message>`` and exits with status 2 — never a traceback.
"""

from __future__ import annotations


class LumeError(Exception):
    """An error caused by the user's input or environment, reported as one line."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        where = []
        if path is not None:
            where.append(str(path) if line is None else f"{path}:{line}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        text = f"{prefix}: {message}" if prefix else message
        super().__init__(" ".join(text.split("\n")))
        self.message, self.path, self.line, self.field = message, path, line, field

    def with_field(self, field: str) -> "LumeError":
        """The same error naming ``field`` (when it names none yet)."""
        if self.field is not None:
            return self
        return type(self)(self.message, path=self.path, line=self.line, field=field)


class DataError(LumeError):
    """Malformed or inconsistent benchmark data."""
