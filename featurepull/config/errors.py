"""Readable configuration errors: one message naming each bad field, its value and what is
allowed, instead of pydantic's raw report."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message says which and why."""


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ".".join(str(part) for part in loc)
    if not path:
        return "settings"
    env = "FEATUREPULL_" + "__".join(str(part).upper() for part in loc)
    return f"{path} (env {env})"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def settings_error(exc: Exception, source: str | None = None) -> ConfigError:
    """Turn a pydantic ValidationError (or ValueError) into one ConfigError."""
    where = f" in {source}" if source else ""
    if not isinstance(exc, ValidationError):
        return ConfigError(f"invalid settings{where}: {exc}")
    lines = []
    for err in exc.errors(include_url=False):
        path = _field_path(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown setting (check its spelling in the README's reference)")
        elif err["type"] == "missing":
            lines.append(f"{path}: required")
        else:
            lines.append(f"{path}={_shown(err.get('input'))}: {msg}")
    return ConfigError(f"invalid settings{where}:\n  " + "\n  ".join(lines))
