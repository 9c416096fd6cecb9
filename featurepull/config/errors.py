"""Readable configuration errors: one message naming each bad field, its value and what is
allowed, instead of pydantic's raw report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from featurepull.errors import InputError
from featurepull.redact import Redactor, redact_text


class ConfigError(InputError, ValueError):
    """A setting is missing, malformed or out of range; the message says which and why."""


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ".".join(str(part) for part in loc)
    if not path:
        return "settings"
    env = "FEATUREPULL_" + "__".join(str(part).upper() for part in loc)
    return f"{path} (env {env})"


def _shown(value: Any) -> str:
    # Masked before it is cut short: a URL cut inside its password no longer looks like one.
    text = repr(Redactor().value(value))
    return text if len(text) <= 80 else text[:77] + "..."


def settings_error(exc: Exception, source: str | None = None) -> ConfigError:
    """Turn a pydantic ValidationError (or ValueError) into one ConfigError."""
    where = f" in {source}" if source else ""
    if not isinstance(exc, ValidationError):
        return ConfigError(f"invalid settings{where}: {exc}")
    lines = _error_lines(exc, _field_path, "unknown setting (check its spelling in "
                         "docs/configuration.md)")
    return ConfigError(f"invalid settings{where}:\n  " + "\n  ".join(lines))


def request_error_text(exc: ValidationError, what: str) -> str:
    """One message listing every missing or invalid field of a request, or of a settings
    block read outside :func:`load_settings` (Feast's ``online_store``), each value masked
    (no pydantic report: a Celery caller of send_task sees only this text)."""
    lines = _error_lines(exc, lambda loc: ".".join(map(str, loc)) or "request",
                         "unknown field (check its spelling)")
    return f"invalid {what}:\n  " + "\n  ".join(lines)


def _error_lines(exc: ValidationError, path_of: Callable[[tuple[int | str, ...]], str],
                 unknown: str) -> list[str]:
    # Each part masked on its own (featurepull.redact): a request's error goes back to its
    # sender, into the result backend and the logs, and may quote a URL with a password or
    # a secret-named field. The whole line is not: "password: required" is no secret.
    lines = []
    for err in exc.errors(include_url=False):
        path = redact_text(path_of(err["loc"]))
        msg = redact_text(err["msg"].removeprefix("Value error, "))
        if err["type"] == "extra_forbidden":
            lines.append(f"{path}: {unknown}")
        elif err["type"] == "missing":
            lines.append(f"{path}: required")
        else:
            lines.append(f"{path}={_shown(err.get('input'))}: {msg}")
    return lines
