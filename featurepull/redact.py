"""Masking secrets in text: URL passwords, credential assignments, and known secret values.

The worker's log renderer passes every line through a :class:`Redactor`, and task errors
stored in Redis go through :func:`redact_text`. Three rules, applied in this order:

- literal secrets the caller knows (the AWS keys in the environment, the Redis password);
- the password in a URL's userinfo (``redis://:pw@host``, ``rediss://user:pw@host``);
- the value after a secret-looking name (``AWS_SECRET_ACCESS_KEY=...``, ``password: ...``,
  ``X-Amz-Security-Token: ...``).

Pure functions of their input: callers decide which secrets are known. Like
``featurepull.errors`` it imports only the standard library, so every layer may use it —
the config layer's error messages too (tests/test_layers.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
# Credentials boto3 reads from the environment; their values are masked wherever they appear.
SECRET_ENV_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                    "AWS_SECURITY_TOKEN")
# Shorter known values are not masked literally: too likely to be ordinary words ("test").
# URL passwords and NAME=value assignments are masked whatever their length.
MIN_LITERAL_LENGTH = 6

_SECRET_WORDS = (r"secret|passw(?:or)?d|pwd|token|credential|signature|authorization"
                 r"|api[_-]?key|access[_-]?key")
# A name that holds a secret, as a mapping key or on the left of ``=`` / ``:``.
SECRET_NAME = re.compile(rf"(?i)(?:{_SECRET_WORDS})")
# An already masked password (kombu writes ``:**@``) is left as it is.
_URL_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/\s'\"]*)"
    r":(?P<password>(?!\*+@)[^@/\s'\"]+)@"
)
_ASSIGNMENT = re.compile(
    rf"(?i)(?P<name>\b[\w.-]*(?:{_SECRET_WORDS})[\w-]*)"
    r"(?P<sep>['\"]?\s*[:=]\s*['\"]?)"
    r"(?P<value>(?!\*\*\*)[^\s'\",;&)}\]]+)"
)


def redact_url(url: str, *, bare: bool = False) -> str:
    """One URL fit for messages and logs: its password and secret query values masked
    (``redis://:***@host:6379/0?password=***``). ``bare``, for a narrow monitor column, drops
    the user name and the query string instead. The fragment is always dropped. (URLs
    inside free text: :func:`redact_text`.)"""
    parts = urlsplit(url)
    netloc = parts.netloc
    if bare or parts.password is not None:
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        user = "" if bare or parts.password is None else f"{parts.username or ''}:{MASK}@"
        netloc = f"{user}{host}{port}"
    query = "" if bare else mask_assignments(parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def mask_url_passwords(text: str) -> str:
    """``redis://:pw@host`` → ``redis://:***@host``; the user name stays."""
    return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def mask_assignments(text: str) -> str:
    """``AWS_SECRET_ACCESS_KEY=abc`` → ``AWS_SECRET_ACCESS_KEY=***`` (also ``name: value``)."""
    return _ASSIGNMENT.sub(lambda m: f"{m['name']}{m['sep']}{MASK}", text)


def redact_text(text: str) -> str:
    """``text`` with URL passwords and secret assignments masked (no literal secrets known)."""
    return mask_assignments(mask_url_passwords(text))


def url_password(url: str) -> str | None:
    """The password in a URL's userinfo, decoded (``None`` when it has none)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def secrets_from_env(environ: Mapping[str, str]) -> list[str]:
    """The values of the credential variables boto3 reads (:data:`SECRET_ENV_NAMES`)."""
    return [environ[name] for name in SECRET_ENV_NAMES if environ.get(name)]


class Redactor:
    """Masks known secret values, URL passwords and secret assignments in strings and in
    nested JSON-like values (the event dicts of log lines)."""

    def __init__(self, literals: Iterable[str] = ()) -> None:
        known = sorted({s for s in literals if len(s) >= MIN_LITERAL_LENGTH}, key=len,
                       reverse=True)
        # Longest first, so a secret that contains another is masked whole.
        self._literals = re.compile("|".join(map(re.escape, known))) if known else None

    def text(self, text: str) -> str:
        """``text`` with every rule applied."""
        if self._literals is not None:
            text = self._literals.sub(MASK, text)
        return redact_text(text)

    def value(self, value: Any) -> Any:
        """Strings masked, mappings and sequences walked; a mapping entry whose key names a
        secret (``password``, ``session_token``, ...) has its whole value masked."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {key: MASK if isinstance(key, str) and SECRET_NAME.search(key)
                    and value[key] not in (None, "") else self.value(value[key])
                    for key in value}
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        if isinstance(value, bytes | bytearray):
            return self.text(bytes(value).decode("utf-8", "replace"))
        return value
