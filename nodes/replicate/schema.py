"""A Replicate model's input schema (its OpenAPI), fetched once, cached on disk, turned into ports.

The registry asks a dynamic node for its ports often (validation, planning, the inspector), so a
schema is read from memory, then from `cache_dir()/replicate/schemas`, and only then from the
API. A pinned version never changes, so its file is kept for good; a bare `owner/name` follows
the model's latest version and is refreshed once a day (the stale copy serves when offline). A
failed fetch is remembered for a short while, for the token it was made with (a new token is
tried at once), so an offline editor does not stall on every repaint. The failure is a line
naming the model and the cause (the token refused, 401; no credit, 402; no access, 403; no such
model or version, 404; the network), and `unavailable` hands it to whoever asks why a port is
missing, so validation can say that instead of guessing.

Ports follow the schema's `x-order`: strings (multi-line for prompts), integers and numbers with
their minimum/maximum, enums as combo boxes (an Enum built per schema and reused, so validation
names the allowed values), booleans, and `uri` inputs as Image ports (Video for inputs named
like a video). Names that clash with the node's own parameters get an `in_` prefix; `api_name`
maps them back.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import re
import threading
import time
from typing import Any

from nodes.registry import REQUIRED, PortSpec
from nodes.types import Range

log = logging.getLogger(__name__)

RESERVED = {"model", "ctx"}
PREFIX = "in_"
REFRESH_SECONDS = 24 * 3600
FAILURE_MEMO_SECONDS = 30.0

_memory: dict[tuple[str, str], dict] = {}
_failures: dict[tuple[str, str, str], tuple[float, str]] = {}
_enums: dict[tuple[str, str, tuple], type[enum.Enum]] = {}
_lock = threading.Lock()


def _token_key() -> str:
    """A digest of the token in use, so a remembered failure is the failure of that token only:
    a new token (Settings, the environment) is tried at once, with no hook to call."""
    from app import secrets

    token = secrets.get_token("replicate") or ""
    return hashlib.blake2b(token.encode(), digest_size=8).hexdigest() if token else "none"


def port_name(api: str) -> str:
    return PREFIX + api if api in RESERVED else api


def api_name(port: str) -> str:
    return port[len(PREFIX):] if port.startswith(PREFIX) and port[len(PREFIX):] in RESERVED else port


def _cache_file(ref: str, url: str):
    from app.paths import cache_dir

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", ref)
    host = hashlib.blake2b(url.encode(), digest_size=4).hexdigest()
    folder = cache_dir() / "replicate" / "schemas"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{safe}.{host}.json"


def input_schema(openapi: dict) -> dict:
    """The `Input` object schema with `$ref`/`allOf` enums resolved inline."""
    comps = (openapi.get("components") or {}).get("schemas") or {}
    inp = dict(comps.get("Input") or {})
    props = {}
    for name, prop in (inp.get("properties") or {}).items():
        prop = dict(prop)
        for ref in [*(prop.pop("allOf", None) or []), *(prop.pop("anyOf", None) or [])]:
            target = ref.get("$ref", "") if isinstance(ref, dict) else ""
            resolved = comps.get(target.rsplit("/", 1)[-1], {}) if target else ref
            for k, v in resolved.items():
                prop.setdefault(k, v)
        props[name] = prop
    return {"properties": props, "required": list(inp.get("required") or [])}


def cached_schema(ref: str, settings: Any = None) -> dict | None:
    """The schema from memory or disk (however old), without touching the network."""
    from nodes.replicate.client import base_url

    url = base_url(settings)
    with _lock:
        hit = _memory.get((ref, url))
    if hit is not None:
        return hit
    path = _cache_file(ref, url)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    with _lock:
        _memory[(ref, url)] = doc
    return doc


def load_schema(ref: str, settings: Any = None, refresh: bool = False) -> dict:
    """The input schema of `ref` ({"properties", "required", "version", ...}); fetch if needed.

    Raises ReplicateNodeError (one line) when it cannot be had.
    """
    from nodes.replicate.client import ReplicateNodeError, base_url, parse_ref

    parse_ref(ref)
    url = base_url(settings)
    key = (ref, url)
    doc = cached_schema(ref, settings)
    pinned = ":" in ref
    if doc is not None and not refresh and (pinned or time.time() - doc.get("fetched_at", 0) < REFRESH_SECONDS):
        return doc
    failure_key = (ref, url, _token_key())
    with _lock:
        failed = _failures.get(failure_key)
    if failed and not refresh and time.monotonic() - failed[0] < FAILURE_MEMO_SECONDS:
        if doc is not None:
            return doc
        raise ReplicateNodeError(failed[1])
    try:
        fresh = fetch_schema(ref, settings)
    except ReplicateNodeError as exc:
        with _lock:
            _failures[failure_key] = (time.monotonic(), str(exc))
        if doc is not None:
            log.info("using the cached schema of %s: %s", ref, exc)
            return doc
        raise
    with _lock:
        _memory[key] = fresh
        _failures.pop(failure_key, None)
    path = _cache_file(ref, url)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(fresh), encoding="utf-8")
    tmp.replace(path)
    return fresh


def unavailable(ref: str, settings: Any = None) -> str | None:
    """Why the schema of `ref` cannot be had right now (one line naming the model), or None.

    Goes through `load_schema`, so right after a failed fetch it answers from the failure memo
    without another request.
    """
    from nodes.replicate.client import ReplicateNodeError

    try:
        load_schema((ref or "").strip(), settings)
    except ReplicateNodeError as exc:
        return str(exc)
    return None


def fetch_schema(ref: str, settings: Any = None) -> dict:
    """Ask the API for the model (or version) and keep its input schema."""
    from nodes.replicate.client import Limits, ReplicateNodeError, get_client, parse_ref, with_retry

    owner, name, version = parse_ref(ref)
    try:
        client = get_client(settings)
    except ReplicateNodeError as exc:  # no token: say which model needed it, as a run does
        raise ReplicateNodeError(f"Replicate {ref}: {exc}") from None
    limits = Limits.from_settings(settings)
    limits.retry_seconds = min(limits.retry_seconds, 3.0)  # the editor waits on this: fail fast, retry later
    if version:
        v = with_retry(lambda: _version(client, owner, name, version), model=ref, action="read schema",
                       limits=limits, idempotent=True)
        openapi, version_id = v.openapi_schema, v.id
    else:
        m = with_retry(lambda: client.models.get(f"{owner}/{name}"), model=ref, action="read schema",
                       limits=limits, idempotent=True)
        if m.latest_version is None:
            raise ReplicateNodeError(f"Replicate {ref}: the model has no published version yet")
        openapi, version_id = m.latest_version.openapi_schema, m.latest_version.id
    doc = input_schema(openapi or {})
    doc.update(ref=ref, version=version_id, fetched_at=time.time(),
               output=((openapi or {}).get("components") or {}).get("schemas", {}).get("Output", {}))
    return doc


def _version(client: Any, owner: str, name: str, version: str) -> Any:
    from replicate.version import Versions

    return Versions(client, model=(owner, name)).get(version)


def _enum_for(ref: str, name: str, values: list) -> type[enum.Enum]:
    """One Enum class per (model, input, values), so repeated lookups agree on identity."""
    key = (ref, name, tuple(values))
    with _lock:
        cls = _enums.get(key)
        if cls is None:
            labels = [str(v) if str(v) and not str(v).startswith("_") else f"v{v}" for v in values]
            title = re.sub(r"\W+", "_", f"{ref}_{name}").strip("_")
            try:
                cls = enum.Enum(title, list(zip(labels, values, strict=True)), module=__name__)
            except (TypeError, ValueError):  # labels that clash or that Enum reserves: number them
                cls = enum.Enum(title, [(f"v{i}", v) for i, v in enumerate(values)], module=__name__)
            _enums[key] = cls
        return cls


def _is_video(name: str, prop: dict) -> bool:
    text = f"{name} {prop.get('title', '')}".lower()
    return "video" in text


def _is_other_file(name: str, prop: dict) -> bool:
    text = f"{name} {prop.get('title', '')}".lower()
    return any(w in text for w in ("audio", "voice", "music", "speech", "zip", "archive", "weights"))


def port_for(ref: str, name: str, prop: dict, required: bool) -> PortSpec | None:
    """A PortSpec for one schema property, or None for a type this node cannot send."""
    typ = prop.get("type")
    fmt = prop.get("format")
    help_text = " ".join(str(prop.get("description") or prop.get("title") or "").split())
    default = prop.get("default", REQUIRED if required else None)
    pname = port_name(name)
    items = prop.get("items") or {}
    if (typ == "string" and fmt == "uri") or (typ == "array" and items.get("format") == "uri"):
        if _is_other_file(name, prop):
            return PortSpec(pname, "str", default=default, optional=not required, help=help_text or "a URL")
        kind = "Video" if _is_video(name, prop) else "Image"
        return PortSpec(pname, kind, default=REQUIRED if required else None, optional=not required,
                        help=help_text)
    if prop.get("enum"):
        cls = _enum_for(ref, name, list(prop["enum"]))
        d = default
        if d not in (REQUIRED, None):
            d = next((m for m in cls if m.value == d), REQUIRED if required else None)
        kind = f"enum:{cls.__module__}.{cls.__qualname__}"
        return PortSpec(pname, kind, default=d, optional=not required, enum=cls, help=help_text)
    if typ in ("integer", "number"):
        kind = "int" if typ == "integer" else "float"
        if name == "seed" and kind == "int":
            kind = "Seed"
        lo, hi = prop.get("minimum"), prop.get("maximum")
        rng = Range(lo, hi) if lo is not None or hi is not None else None
        return PortSpec(pname, kind, default=default, optional=not required, range=rng, help=help_text)
    if typ == "boolean":
        return PortSpec(pname, "bool", default=default, optional=not required, help=help_text)
    if typ == "string" or typ == "array":
        spec = PortSpec(pname, "str", default=default if not isinstance(default, list) else ", ".join(
            map(str, default)), optional=not required, help=help_text)
        spec.multiline = "prompt" in name.lower()
        return spec
    log.debug("Replicate %s: input '%s' of type %r has no port", ref, name, typ)
    return None


def ports_from_schema(ref: str, schema: dict) -> list[PortSpec]:
    """Ports for every input the node can send, in the model's own order."""
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    order = sorted(props, key=lambda n: (props[n].get("x-order", 1 << 20), n))
    ports = []
    for name in order:
        p = port_for(ref, name, props[name], name in required)
        if p is not None:
            ports.append(p)
    return ports


def array_item_type(schema: dict, port: str) -> str | None:
    """The item type of an array input ('string', 'integer', ...), None when it is not an array."""
    prop = (schema.get("properties") or {}).get(api_name(port)) or {}
    if prop.get("type") != "array":
        return None
    return (prop.get("items") or {}).get("type", "string")


def inferred_ports(params: dict[str, Any], skip: set[str]) -> list[PortSpec]:
    """Ports for the saved parameters when the schema cannot be had (offline, no token).

    The workflow still loads and validates; running the node then reports why the schema is
    missing.
    """
    kinds = {bool: "bool", int: "int", float: "float", str: "str"}
    out = []
    for name, value in params.items():
        if name in skip:
            continue
        out.append(PortSpec(name, kinds.get(type(value), "Any"), default=None, optional=True))
    return out
