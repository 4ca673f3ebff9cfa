"""Redaction of secret values from everything the product writes to the API or to a log.

One `Redactor` holds the literal values of the Secrets an agent pod receives and replaces every
occurrence of them, and of the forms a tool is likely to print them in, with `***`:

- the value itself, and each line of a multi-line value (a PEM key printed line by line);
- its JSON-escaped and URL-encoded forms, when they differ from the value;
- base64 (standard and URL-safe alphabets, with and without padding), including the part of a
  longer base64 stream that encodes the value at any byte alignment, so `base64 < .env` is
  covered too. Only for values of at least `MIN_ENCODED` characters: shorter encoded fragments
  would match innocent text.

Values shorter than `MIN_SECRET` characters are ignored (replacing every `abc` would destroy the
text and protect nothing). All forms are compiled into one regular expression, longest first,
so a redactor without secrets costs one attribute check per call.

Only whole values (and whole encoded forms) are matched, never fragments of a value: matching a
prefix or suffix would let whoever controls some of the text probe a secret character by
character from what comes back redacted. Callers therefore redact *before* they clip a text.

Where the values come from in a pod (`from_environment`): the variables named in
GASTOWN_SECRET_ENV (the Town's `spec.agent.secretEnv`, names set by the operator's pod builder),
the files of the mounted git credentials directory (except `username` and `known_hosts`, which
are not secret) and the pull-request token file. The operator builds its redactors from the same
Secrets through the API (`gastown.kube.redaction`).
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import re
import traceback
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

REDACTED = "***"
MIN_SECRET = 4
"""Values shorter than this are not redacted."""
MIN_ENCODED = 8
"""Values shorter than this are redacted only literally, not in encoded forms."""
PUBLIC_CREDENTIAL_KEYS = frozenset({"username", "known_hosts"})
"""Keys of a git credentials Secret that hold no secret (an account name, public host keys)."""

ENV_SECRET_ENV = "GASTOWN_SECRET_ENV"
"""Comma-separated names of the environment variables that hold secrets (never their values)."""
ENV_GIT_CREDENTIALS_DIR = "GASTOWN_GIT_CREDENTIALS_DIR"
ENV_PR_TOKEN_FILE = "GASTOWN_PR_TOKEN_FILE"


class Redactor:
    """Replaces known secret values (and their common encodings) with `***`."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        secrets = _secret_values(values)
        self.values: frozenset[str] = frozenset(secrets)
        forms = set(secrets)
        for value in secrets:
            forms.update(_encoded_forms(value))
        ordered = sorted((f for f in forms if len(f) >= MIN_SECRET), key=lambda f: (-len(f), f))
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Redactor) and other.values == self.values

    def __hash__(self) -> int:
        return hash(self.values)

    def extended(self, values: Iterable[str]) -> Redactor:
        """A redactor for these values and the new ones (self when nothing is new)."""
        new = _secret_values(values) - self.values
        return Redactor(self.values | new) if new else self

    def redact(self, text: str) -> str:
        """`text` with every known secret form replaced by `***`."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(REDACTED, text)

    def redact_json(self, value: Any) -> Any:
        """A copy of a JSON-shaped value with every string redacted (dict keys are kept)."""
        if self._pattern is None:
            return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {key: self._walk(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._walk(item) for item in value]
        return value


def _secret_values(values: Iterable[str]) -> set[str]:
    """The literal strings to hide: each value, trimmed, and each line of it."""
    found: set[str] = set()
    for value in values:
        if not value:
            continue
        candidates = [value, value.strip(), *(line.strip() for line in value.splitlines())]
        found.update(c for c in candidates if len(c) >= MIN_SECRET)
    return found


def _encoded_forms(value: str) -> set[str]:
    forms = {json.dumps(value)[1:-1], urllib.parse.quote(value, safe="")}
    if len(value) >= MIN_ENCODED:
        forms.update(_base64_forms(value.encode()))
    forms.discard(value)
    return forms


def _base64_forms(data: bytes) -> set[str]:
    """Base64 of `data` alone, and the characters that encode it inside a longer stream.

    In a stream the value starts at byte offset 0, 1 or 2 modulo 3; for each alignment keep the
    characters whose six bits all come from the value (the first and last may mix in neighbours).
    """
    whole = base64.b64encode(data).decode()
    forms = {whole, whole.rstrip("=")}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data).decode().rstrip("=")
        first = (8 * shift + 5) // 6
        end = (8 * (shift + len(data))) // 6
        forms.add(encoded[first:end])
    forms |= {form.replace("+", "-").replace("/", "_") for form in forms}
    return {form for form in forms if len(form) >= MIN_ENCODED}


# --- Where a pod's secrets are ------------------------------------------------------------------


def from_environment(environ: Mapping[str, str] | None = None) -> Redactor:
    """The redactor of an agent pod: every secret value its environment and mounts give it.

    Reads the variables named in GASTOWN_SECRET_ENV, the git credentials directory and the
    pull-request token file named by the environment. Unreadable files are skipped (the code
    that needs them reports the problem); values are never logged.
    """
    env = os.environ if environ is None else environ
    names = [n.strip() for n in env.get(ENV_SECRET_ENV, "").split(",") if n.strip()]
    values = [env[name] for name in names if env.get(name)]
    credentials = env.get(ENV_GIT_CREDENTIALS_DIR)
    if credentials:
        values.extend(directory_values(Path(credentials), PUBLIC_CREDENTIAL_KEYS))
    token_file = env.get(ENV_PR_TOKEN_FILE)
    if token_file:
        values.extend(_read(Path(token_file)))
    return Redactor(values)


@functools.cache
def pod_redactor() -> Redactor:
    """The redactor of this process's environment, built once (see `from_environment`)."""
    return from_environment()


def directory_values(directory: Path, skip: Iterable[str] = ()) -> list[str]:
    """The contents of the files of a mounted Secret directory, except the keys in `skip`.

    Kubernetes mounts each key as a symlink into a hidden `..data` directory; hidden entries are
    the mount's own bookkeeping and are skipped.
    """
    skipped = set(skip)
    values: list[str] = []
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return values
    for entry in entries:
        if entry.name.startswith(".") or entry.name in skipped:
            continue
        values.extend(_read(entry))
    return values


def _read(path: Path) -> list[str]:
    try:
        return [path.read_text()] if path.is_file() else []
    except (OSError, UnicodeDecodeError):
        return []


# --- Logs -----------------------------------------------------------------------------------------


class RedactingFilter(logging.Filter):
    """A handler filter that redacts the formatted message, traceback and stack of a record.

    `source` is called for every record so that the redactor may change over time (the operator
    learns the values of a town's Secrets when it first writes for that town).
    """

    def __init__(self, source: Callable[[], Redactor]) -> None:
        super().__init__()
        self.source = source

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        redactor = self.source()
        if not redactor:
            return True
        record.msg = redactor.redact(record.getMessage())
        record.args = None
        if record.exc_info:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = redactor.redact(text)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redactor.redact(record.stack_info)
        return True


def install_log_redaction(source: Callable[[], Redactor], loggers: Iterable[str] = ("",)) -> None:
    """Redact every record that reaches a handler of these loggers (default: the root logger).

    Call it after logging is configured: it filters the handlers that exist at that moment.
    """
    for name in loggers:
        for handler in logging.getLogger(name or None).handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter(source))
