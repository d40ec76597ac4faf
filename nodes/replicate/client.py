"""Talking to Replicate: clients, retries, predictions with a deadline, one-line errors.

The `replicate` 1.0 client (pinned `<2`: 2.x is a different API) reaches every REST call, but it
retries only GET-like calls, never a POST (create, cancel, upload) that got 429 or 5xx; its
`wait()` has no deadline, and a prediction in the newer `aborted` state breaks its parsing. So
this module retries POSTs itself with backoff inside a time limit, polls predictions as raw JSON
with its own deadline, treats `aborted` as failed, and turns HTTP errors into one line that
names the model and the cause. No message it builds can carry the token (`app.secrets.redact`).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from app import secrets
from nodes.types import Cancelled

DEFAULT_BASE_URL = "https://api.replicate.com"
TERMINAL = {"succeeded", "failed", "canceled", "aborted"}
RETRY_STATUS = {429, 500, 502, 503, 504}

T = TypeVar("T")


class ReplicateNodeError(RuntimeError):
    """A Replicate call failed; the message is one line a user can act on."""


@dataclass
class Limits:
    """Time limits and sizes (EngineSettings.extra["replicate"] may override any of them)."""

    retry_seconds: float = 60.0  # keep retrying 429/5xx answers for this long
    prediction_seconds: float = 1800.0  # give up (and cancel on the server) after this long
    poll_interval: float = 0.5  # first poll gap; it grows to max_poll_interval
    max_poll_interval: float = 3.0
    max_download_bytes: int = 512 << 20
    data_uri_bytes: int = 256 << 10  # images at most this big travel inline as data URIs

    @classmethod
    def from_settings(cls, settings: Any = None) -> Limits:
        lim = cls()
        env_poll = os.environ.get("REPLICATE_POLL_INTERVAL")
        if env_poll:
            lim.poll_interval = float(env_poll)
        extra = getattr(settings, "extra", None) or {}
        for key, value in (extra.get("replicate") or {}).items():
            if hasattr(lim, key) and key != "base_url":
                setattr(lim, key, type(getattr(lim, key))(value))
        return lim


def base_url(settings: Any = None) -> str:
    """REPLICATE_BASE_URL, else the settings' `replicate.base_url`, else the public API."""
    env = (os.environ.get("REPLICATE_BASE_URL") or "").strip()
    if env:
        return env.rstrip("/")
    extra = getattr(settings, "extra", None) or {}
    return str((extra.get("replicate") or {}).get("base_url") or DEFAULT_BASE_URL).rstrip("/")


_clients: dict[tuple[str, str], Any] = {}
_clients_lock = threading.Lock()


def get_client(settings: Any = None, token: str | None = None) -> Any:
    """A `replicate.Client` for the current token and base URL (one per pair, shared by threads)."""
    token = token or secrets.get_token("replicate")
    if not token:
        raise ReplicateNodeError("no Replicate API token: set REPLICATE_API_TOKEN or add the token "
                                 "in Settings (it is kept in the OS keyring)")
    secrets.install_log_redaction()
    url = base_url(settings)
    key = (token, url)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            import httpx
            import replicate

            client = replicate.Client(api_token=token, base_url=url,
                                      timeout=httpx.Timeout(30.0, connect=10.0, pool=30.0),
                                      event_hooks={"response": [_note_retry_after]})
            client._client  # noqa: B018 - build the shared httpx client once, under the lock
            for stale in [k for k in _clients if k[1] == url]:  # a replaced token is not kept around
                del _clients[stale]
            _clients[key] = client
    return client


_last = threading.local()


def _note_retry_after(response: Any) -> None:
    """Keep a 429/5xx answer's Retry-After (the client's error object drops the headers)."""
    value = response.headers.get("retry-after", "") if response.status_code in RETRY_STATUS else ""
    _last.retry_after = float(value) if value.strip().isdigit() else None


def _take_retry_after() -> float | None:
    value = getattr(_last, "retry_after", None)
    _last.retry_after = None
    return value


def describe_error(exc: BaseException, model: str, action: str = "") -> str:
    """One line for a failed call: which model, what went wrong, what to do about it."""
    status = getattr(exc, "status", None)
    detail = (getattr(exc, "detail", None) or getattr(exc, "title", None) or "").strip()
    where = f"Replicate {model}" + (f" ({action})" if action else "")
    if status == 401:
        msg = f"{where}: the API token was rejected (401); check it in Settings or REPLICATE_API_TOKEN"
    elif status == 402:
        msg = f"{where}: the Replicate account has no credit left (402); add billing at replicate.com"
    elif status == 403:
        msg = f"{where}: this token may not use this model (403)"
    elif status == 404:
        msg = f"{where}: no such model or version on Replicate (404); check the model reference"
    elif status == 422:
        msg = f"{where}: invalid input {_invalid_field(detail)}(422)"
    elif status == 429:
        msg = f"{where}: Replicate kept answering 'too many requests' (429); try again later"
    elif isinstance(status, int):
        msg = f"{where}: Replicate answered {status}" + (f": {_one_line(detail)}" if detail else "")
    else:
        msg = f"{where}: {type(exc).__name__}: {_one_line(str(exc))}"
    return secrets.redact(msg)


def _invalid_field(detail: str) -> str:
    """'width: must be <= 1440 ' from Replicate's '- input.width: Must be less than ...'."""
    text = _one_line(detail.replace("\n", " ").strip(" -"))
    m = re.search(r"input\.(\w+)\s*:\s*(.+?)(?:\s+-\s+input\.|$)", text)
    if m:
        return f"'{m.group(1)}': {m.group(2).strip()} "
    m = re.search(r"(\w+) is required", text)
    if m:
        return f"'{m.group(1)}': it is required "
    return f"({text}) " if text else ""


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line[:300] + ("..." if len(line) > 300 else "")


def _transient(exc: BaseException, idempotent: bool) -> bool:
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status in RETRY_STATUS
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx comes with replicate
        return False
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return True  # the request never reached the server: safe to send again
    return idempotent and isinstance(exc, httpx.TransportError)


def with_retry(call: Callable[[], T], *, model: str, action: str, limits: Limits,
               cancel: threading.Event | None = None, idempotent: bool = False,
               on_retry: Callable[[str], None] | None = None) -> T:
    """Run `call`, retrying 429/5xx answers (and lost connections) with backoff until the limit.

    The wait is exponential from 0.25 s, or the server's Retry-After when that is longer.

    Non-transient errors (401, 402, 404, 422, ...) become a ReplicateNodeError at once.
    """
    deadline = time.monotonic() + limits.retry_seconds
    backoff = 0.25
    attempt = 0
    while True:
        attempt += 1
        _last.retry_after = None
        try:
            return call()
        except Exception as exc:
            if isinstance(exc, (Cancelled, ReplicateNodeError)):
                raise
            asked = _take_retry_after()
            delay = max(backoff, asked) if asked is not None else backoff
            if not _transient(exc, idempotent) or time.monotonic() + delay > deadline:
                raise ReplicateNodeError(describe_error(exc, model, action)) from None
            if on_retry is not None:
                on_retry(f"{action}: {_status_text(exc)}, retry {attempt} in {delay:.1f} s")
            if cancel is not None and cancel.wait(delay):
                raise Cancelled("cancelled") from None
            if cancel is None:
                time.sleep(delay)
            backoff = min(backoff * 2, 8.0)


def _status_text(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    return f"Replicate answered {status}" if status else f"connection problem ({type(exc).__name__})"


def parse_ref(ref: str) -> tuple[str, str, str | None]:
    """(owner, name, version or None) from 'owner/name' or 'owner/name:version'."""
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)/([A-Za-z0-9_.\-]+)(?::([A-Za-z0-9]+))?\s*$", ref or "")
    if not m:
        raise ReplicateNodeError(f"'{ref}' is not a Replicate model reference: write owner/name "
                                 "or owner/name:version")
    return m.group(1), m.group(2), m.group(3)


#: Models known to take predictions only by version (community models), so later calls skip the 404.
_versioned_models: set[tuple[str, str]] = set()


@dataclass
class PredictionResult:
    """What a finished prediction gave: its raw output, id and logs."""

    id: str
    output: Any
    logs: str
    metrics: dict


class Prediction:
    """One prediction on the server, created, polled with a deadline, cancellable.

    `on_status(text, fraction)` hears each change of status and each new log line.
    """

    def __init__(self, client: Any, ref: str, limits: Limits, cancel: threading.Event | None = None,
                 on_status: Callable[[str, float | None], None] | None = None,
                 latest_version: Callable[[], str | None] | None = None) -> None:
        self.client = client
        self.ref = ref
        self.owner, self.name, self.version = parse_ref(ref)
        self.model = f"{self.owner}/{self.name}"
        self.limits = limits
        self.cancel_event = cancel or threading.Event()
        self.on_status = on_status or (lambda text, fraction: None)
        self._latest_version = latest_version
        self.id: str | None = None
        self._where = (str(getattr(client, "_base_url", "")), self.model)

    def _notify(self, text: str) -> None:
        self.on_status(text, None)

    def create(self, inputs: dict[str, Any]) -> str:
        def by_model() -> Any:
            return self.client.models.predictions.create(model=(self.owner, self.name), input=inputs)

        def by_version(version: str) -> Callable[[], Any]:
            return lambda: self.client.predictions.create(version=version, input=inputs)

        kw = dict(model=self.ref, action="create", limits=self.limits, cancel=self.cancel_event,
                  on_retry=self._notify)
        latest = self._latest_version() if self._latest_version else None
        if self.version:
            pred = with_retry(by_version(self.version), **kw)
        elif latest and self._where in _versioned_models:
            pred = with_retry(by_version(latest), **kw)
        else:
            try:
                pred = with_retry(by_model, **kw)
            except ReplicateNodeError as exc:
                # Community models have no model-level endpoint (404): run their latest version.
                if "(404)" not in str(exc) or not latest:
                    raise
                pred = with_retry(by_version(latest), **kw)
                _versioned_models.add(self._where)
        self.id = pred.id
        self._notify(f"{pred.status} ({pred.id})")
        return pred.id

    def _get(self) -> dict:
        resp = with_retry(lambda: self.client._request("GET", f"/v1/predictions/{self.id}"),
                          model=self.ref, action="poll", limits=self.limits, cancel=self.cancel_event,
                          idempotent=True, on_retry=self._notify)
        return resp.json()

    def cancel(self) -> None:
        """Ask the server to stop (best effort: a cancel that fails is reported, not raised)."""
        if self.id is None:
            return
        try:
            with_retry(lambda: self.client._request("POST", f"/v1/predictions/{self.id}/cancel"),
                       model=self.ref, action="cancel", limits=Limits(retry_seconds=10.0))
        except ReplicateNodeError as exc:
            self._notify(str(exc))

    def wait(self) -> PredictionResult:
        """Poll until the prediction ends; cancel it on the server if the run is cancelled."""
        from replicate.prediction import Prediction as ClientPrediction

        deadline = time.monotonic() + self.limits.prediction_seconds
        interval = self.limits.poll_interval
        seen_logs = ""
        status = ""
        while True:
            data = self._get()
            new_status = str(data.get("status") or "")
            logs = data.get("logs") or ""
            if new_status != status:
                status = new_status
                self.on_status(status, None)
            if logs != seen_logs:
                fresh = logs[len(seen_logs):] if logs.startswith(seen_logs) else logs
                seen_logs = logs
                lines = [ln.strip() for ln in re.split(r"[\r\n]+", fresh) if ln.strip()]
                for line in lines[-3:]:
                    progress = ClientPrediction.Progress.parse(line)
                    self.on_status(secrets.redact(line), progress.percentage if progress else None)
            if status in TERMINAL:
                break
            if time.monotonic() > deadline:
                self.cancel()
                raise ReplicateNodeError(f"Replicate {self.ref}: no result after "
                                         f"{self.limits.prediction_seconds:g} s; the prediction was cancelled")
            if self.cancel_event.wait(interval):
                self.cancel()
                raise Cancelled("cancelled")
            interval = min(interval * 1.25, self.limits.max_poll_interval)
        if status == "succeeded":
            return PredictionResult(self.id or "", data.get("output"), logs, data.get("metrics") or {})
        if status == "canceled":
            raise ReplicateNodeError(f"Replicate {self.ref}: the prediction was cancelled on the server")
        error = _one_line(str(data.get("error") or "no error message"))
        word = "was aborted" if status == "aborted" else "failed"
        raise ReplicateNodeError(secrets.redact(f"Replicate {self.ref}: the prediction {word}: {error}"))
