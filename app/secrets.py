"""API tokens: read from the environment or the OS keyring, and kept out of every log line.

A token lives in an environment variable (`REPLICATE_API_TOKEN`) or in the OS keyring (the
settings dialog stores it there); never in a workflow, a settings file or an image. Every token
this module hands out is remembered so that `redact()` and the log-record factory installed by
`install_log_redaction()` can blank it wherever it would otherwise be printed. A machine without
a keyring backend (a headless CI box) simply has no stored tokens; storing one there raises a
one-line `SecretStoreError` the dialog can show.
"""

from __future__ import annotations

import logging
import os
import re
import threading

SERVICE = "imagebash"

#: Environment variables that override the keyring, per token name.
ENV_VARS = {"replicate": "REPLICATE_API_TOKEN"}

_known: set[str] = set()
_lock = threading.Lock()
_installed = False

# Token shapes worth blanking even when this process never loaded them (pasted into a prompt,
# echoed back by a server): Replicate's `r8_...` tokens and any bearer credential.
_PATTERNS = (
    re.compile(r"r8_[A-Za-z0-9]{8,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}"),
)
MASK = "[token hidden]"


class SecretStoreError(RuntimeError):
    """The OS keyring cannot store or delete a token (no backend, locked, refused)."""


def _remember(value: str | None) -> str | None:
    if value:
        with _lock:
            _known.add(value)
    return value


def _keyring():
    """The keyring module, or None when it is missing or has no usable backend."""
    try:
        import keyring
        from keyring.backends import fail, null
    except ImportError:
        return None
    try:
        # fail: no backend found; null: one that stores nothing (PYTHON_KEYRING_BACKEND=...null.Keyring)
        if isinstance(keyring.get_keyring(), (fail.Keyring, null.Keyring)):
            return None
    except Exception:  # noqa: BLE001 - a broken backend means "no keyring", never a crash
        return None
    return keyring


def remember(value: str | None) -> str | None:
    """Mark a token read by other means (a token file) as secret, so no log line shows it."""
    return _remember(value.strip() if value else value)


def keyring_available() -> bool:
    """Whether tokens can be stored in the OS keyring on this machine."""
    return _keyring() is not None


def get_token(name: str = "replicate") -> str | None:
    """The token from its environment variable, else from the keyring, else None."""
    env = ENV_VARS.get(name, f"IMAGEBASH_{name.upper()}_TOKEN")
    value = (os.environ.get(env) or "").strip()
    if value:
        return _remember(value)
    kr = _keyring()
    if kr is None:
        return None
    try:
        stored = kr.get_password(SERVICE, name)
    except Exception:  # noqa: BLE001 - a locked or broken keyring reads as "no token"
        logging.getLogger(__name__).warning("the OS keyring could not be read; no stored %s token", name)
        return None
    return _remember(stored.strip()) if stored and stored.strip() else None


def token_source(name: str = "replicate") -> str | None:
    """Where the token comes from ('environment' or 'keyring'), for the settings dialog."""
    env = ENV_VARS.get(name, f"IMAGEBASH_{name.upper()}_TOKEN")
    if (os.environ.get(env) or "").strip():
        return "environment"
    kr = _keyring()
    try:
        return "keyring" if kr is not None and kr.get_password(SERVICE, name) else None
    except Exception:  # noqa: BLE001
        return None


def set_token(name: str, value: str) -> None:
    """Store a token in the OS keyring; raise SecretStoreError when that is impossible."""
    value = value.strip()
    if not value:
        raise SecretStoreError("an empty token cannot be stored; use delete_token to remove one")
    _remember(value)
    kr = _keyring()
    if kr is None:
        raise SecretStoreError("no OS keyring is available on this machine; set the "
                               f"{ENV_VARS.get(name, 'token')} environment variable instead")
    try:
        kr.set_password(SERVICE, name, value)
    except Exception as exc:  # noqa: BLE001 - the backend's own errors vary by platform
        raise SecretStoreError(f"the OS keyring refused to store the {name} token ({type(exc).__name__})") from None


def delete_token(name: str) -> None:
    """Remove a stored token (a token that is not stored is not an error)."""
    kr = _keyring()
    if kr is None:
        return
    try:
        kr.delete_password(SERVICE, name)
    except Exception as exc:  # noqa: BLE001
        from keyring.errors import PasswordDeleteError

        if not isinstance(exc, PasswordDeleteError):
            raise SecretStoreError(f"the OS keyring refused to delete the {name} token "
                                   f"({type(exc).__name__})") from None


def redact(text: str) -> str:
    """`text` with every known token and anything shaped like one replaced by a mask."""
    if not text:
        return text
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _PATTERNS[0].sub(MASK, text)
    return _PATTERNS[1].sub(lambda m: m.group(1) + MASK, text)


class RedactingFilter(logging.Filter):
    """A logging filter (for handlers) that blanks tokens in a record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record is the logging module's business
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, ()
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        if redact(str(exc)) != str(exc):
            record.exc_text = redact("".join(logging.Formatter().formatException(record.exc_info)))


def install_log_redaction() -> None:
    """Blank tokens in every log record this process creates, whichever handler prints it.

    A filter on one handler misses handlers added later (a log panel, pytest's capture); a
    record factory sees each record once, when it is made.
    """
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    logging.setLogRecordFactory(factory)
