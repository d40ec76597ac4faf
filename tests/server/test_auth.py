"""The token: made once with mode 0600 and reused, required on every route but /health (the
schema and the docs too), refused with one 401 line on HTTP and on the WebSocket handshake."""

from __future__ import annotations

import os
import stat

import pytest
from starlette.testclient import WebSocketDenialResponse

from app.engine.protocol import API
from app.server.auth import TokenError, bearer_ok, is_loopback, load_or_make_token, read_token_file
from tests.server.conftest import TOKEN


def test_token_is_made_once_private_and_reused(tmp_path):
    token, where, made = load_or_make_token(tmp_path)
    assert made and where == tmp_path / "token" and len(token) >= 32
    assert stat.S_IMODE(os.stat(where).st_mode) == 0o600
    again, _, made_again = load_or_make_token(tmp_path)
    assert again == token and not made_again
    os.chmod(where, 0o644)  # a copy left readable by others is closed again
    load_or_make_token(tmp_path)
    assert stat.S_IMODE(os.stat(where).st_mode) == 0o600


def test_token_file_is_read_and_a_weak_one_refused(tmp_path):
    f = tmp_path / "tok"
    f.write_text("  " + "k" * 20 + "\n")
    assert load_or_make_token(tmp_path / "d", f)[0] == "k" * 20
    f.write_text("short")
    with pytest.raises(TokenError, match="at least 16"):
        read_token_file(f)
    with pytest.raises(TokenError, match="cannot read"):
        read_token_file(tmp_path / "missing")


def test_bearer_check():
    assert bearer_ok(f"Bearer {TOKEN}", TOKEN) and bearer_ok(f"bearer  {TOKEN} ", TOKEN)
    for bad in (None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer ", f"Bearer {TOKEN[:-1]}"):
        assert not bearer_ok(bad, TOKEN)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.2")


@pytest.mark.parametrize("path", [f"{API}/info", f"{API}/nodes", f"{API}/jobs", f"{API}/jobs/x", f"{API}/models",
                                  f"{API}/events", "/openapi.json", "/docs", f"{API}/no-such-route"])
def test_every_route_but_health_needs_the_token(server, path):
    c = server.client
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": TOKEN}):
        r = c.get(path, headers=headers)
        assert r.status_code == 401, (path, headers, r.status_code)
        body = r.json()
        assert set(body) == {"error"} and "\n" not in body["error"] and TOKEN not in r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert c.get(path, headers=server.h).status_code != 401


def test_health_is_open(server):
    r = server.client.get(f"{API}/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_websocket_handshake_needs_the_token(server):
    for headers in ({}, {"Authorization": "Bearer nope-nope-nope-nope"}):
        with pytest.raises(WebSocketDenialResponse) as err:
            with server.client.websocket_connect(f"{API}/events", headers=headers):
                pass
        assert err.value.status_code == 401
        assert "token" in err.value.json()["error"]
    with server.client.websocket_connect(f"{API}/events?after=0", headers=server.h):
        pass


def test_openapi_documents_the_bearer_scheme(server):
    schema = server.client.get("/openapi.json", headers=server.h).json()
    assert schema["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert schema["paths"][f"{API}/health"]["get"]["security"] == []
    assert f"{API}/jobs/{{job_id}}" in schema["paths"]
