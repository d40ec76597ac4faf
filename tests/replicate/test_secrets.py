"""The API token: where it is read from, where it is stored, and that logs never show it."""

from __future__ import annotations

import logging

import keyring
import pytest

from app import secrets


@pytest.fixture(params=["fail", "null"])
def no_keyring(request):
    """No backend at all (fail), or the one that silently stores nothing (null)."""
    from keyring.backends import fail, null

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring() if request.param == "fail" else null.Keyring())
    yield
    keyring.set_keyring(previous)


def test_environment_wins_over_the_keyring(memory_keyring, monkeypatch):
    secrets.set_token("replicate", "r8_FromKeyring000000000000")
    assert secrets.get_token("replicate") == "r8_FromKeyring000000000000"
    assert secrets.token_source() == "keyring"
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_FromEnvironment00000000")
    assert secrets.get_token() == "r8_FromEnvironment00000000"
    assert secrets.token_source() == "environment"


def test_store_and_delete_in_the_keyring(memory_keyring):
    assert secrets.keyring_available()
    secrets.set_token("replicate", "  r8_Stored1111111111111111  ")
    assert memory_keyring.store[("imagebash", "replicate")] == "r8_Stored1111111111111111"
    secrets.delete_token("replicate")
    assert secrets.get_token("replicate") is None
    secrets.delete_token("replicate")  # deleting twice is fine
    with pytest.raises(secrets.SecretStoreError, match="empty token"):
        secrets.set_token("replicate", "   ")


def test_without_a_keyring_backend(no_keyring):
    assert not secrets.keyring_available()
    assert secrets.get_token("replicate") is None
    with pytest.raises(secrets.SecretStoreError, match=r"no OS keyring .* REPLICATE_API_TOKEN"):
        secrets.set_token("replicate", "r8_Nowhere0000000000000000")
    secrets.delete_token("replicate")


def test_redact_blanks_known_tokens_and_token_shapes(monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", "custom-secret-value-123")
    assert secrets.get_token() == "custom-secret-value-123"
    text = secrets.redact("a custom-secret-value-123 b r8_Abcdefghijklmnop c Authorization: Bearer xyz123456789")
    assert "custom-secret-value-123" not in text and "r8_Abcdefghijklmnop" not in text and "xyz123456789" not in text
    assert text.count(secrets.MASK) == 3 and text.startswith("a ") and "Bearer " in text


def test_log_records_are_redacted_whatever_the_handler(monkeypatch, caplog):
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_LoggedToken99999999999")
    secrets.get_token()
    secrets.install_log_redaction()
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("somewhere.deep").warning("calling with %s", "r8_LoggedToken99999999999")
        try:
            raise RuntimeError("bad token r8_LoggedToken99999999999")
        except RuntimeError:
            logging.getLogger("other").exception("failed")
    assert "r8_LoggedToken99999999999" not in caplog.text
    assert secrets.MASK in caplog.text


def test_handler_filter(monkeypatch):
    import io

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(secrets.RedactingFilter())
    log = logging.getLogger("imagebash.test.filter")
    log.addHandler(handler)
    try:
        log.error("token=%s", "r8_HandlerToken000000000000")
    finally:
        log.removeHandler(handler)
    assert "r8_HandlerToken" not in stream.getvalue() and secrets.MASK in stream.getvalue()
