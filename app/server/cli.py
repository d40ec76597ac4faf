"""`imagebash serve`: run the engine behind the remote protocol on this machine (a GPU box).

Why it prints what it prints: the person starting it is in an ssh session or a pod's log
window and needs three things to connect a laptop: the address, the token, and the way in
(an `ssh -L` tunnel, or on Runpod the pod's https proxy URL). Binding beyond loopback always
has a token (one is made when none is given), and without TLS a warning says to use a tunnel
or TLS. uvicorn's access log stays off: it would show every request line, and nothing about a
request is worth a log line that might one day carry a credential.

Registered in `app.cli` through EXTRA_COMMANDS (`register`); `python -m app.server ...` and
`main()` run the same command without the rest of the CLI.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.engine.protocol import API, DEFAULT_MAX_UPLOAD

DEFAULT_PORT = 8188
#: Request body bytes uvicorn buffers before it pauses reading the socket (its default, 64 KB, makes
#: a 200 MB upload thousands of pause/resume rounds through the event loop).
BODY_HIGH_WATER = 1 << 20
#: WebSocket pings keep idle connections open through proxies (Runpod, Cloudflare cut at ~100 s).
WS_PING_SECONDS = 15.0
WS_PING_TIMEOUT = 30.0

log = logging.getLogger("app.server")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface, e.g. in a pod)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free one)")
    p.add_argument("--token-file", type=Path, metavar="F",
                   help="read the bearer token from F (default: make one and keep it in the data dir)")
    p.add_argument("--data-dir", type=Path, metavar="D",
                   help="jobs, event log, uploads and outputs (default: <imagebash data dir>/server)")
    p.add_argument("--models", type=Path, metavar="DIR",
                   help="the models folder (checkpoints/ and loras/ inside); sets IMAGEBASH_MODELS")
    p.add_argument("--tls-cert", type=Path, metavar="C", help="TLS certificate (PEM), with --tls-key")
    p.add_argument("--tls-key", type=Path, metavar="K", help="TLS private key (PEM), with --tls-cert")
    p.add_argument("--preload", action="append", default=[], metavar="MODEL",
                   help="load this checkpoint at start-up, before the first job (repeatable)")
    p.add_argument("--max-upload", type=int, default=DEFAULT_MAX_UPLOAD, metavar="BYTES",
                   help=f"largest blob accepted (default {DEFAULT_MAX_UPLOAD})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")


def register(subparsers: Any) -> None:
    """Add `serve` to the `imagebash` command (app.cli's EXTRA_COMMANDS)."""
    p = subparsers.add_parser("serve", help="run the engine for a remote desktop (HTTP + WebSocket)",
                              description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.set_defaults(func=cmd_serve)


def main(argv: Sequence[str] | None = None, registry: Any = None) -> int:
    """`imagebash serve` on its own; `registry` replaces the node registry (tests, embedding)."""
    from app.cli import CliError

    p = argparse.ArgumentParser(prog="imagebash serve", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    args.registry = registry
    try:
        return cmd_serve(args)
    except CliError as exc:
        print(f"imagebash: error: {exc}", file=sys.stderr)
        return 2


def connect_lines(host: str, port: int, tls: bool, token_line: str | None,
                  env: dict[str, str] | None = None) -> list[str]:
    """What `serve` prints once it listens: the URL, the token, how to reach it from a laptop."""
    from app.server.auth import is_loopback

    env = dict(os.environ) if env is None else env
    scheme = "https" if tls else "http"
    shown = host if host not in ("0.0.0.0", "::", "") else socket.gethostname()
    shown = f"[{shown}]" if ":" in shown else shown
    lines = [f"imagebash serve: listening on {scheme}://{shown}:{port} (API under {API}; "
             f"clients send 'Authorization: Bearer <token>')"]
    if token_line:
        lines.append(token_line)
    if not tls or is_loopback(host):
        lines.append(f"from a laptop: ssh -L {port}:127.0.0.1:{port} {getpass.getuser()}@{socket.gethostname()}"
                     f"   then connect to http://127.0.0.1:{port}")
    pod = env.get("RUNPOD_POD_ID", "").strip()
    if pod:
        lines.append(f"on Runpod: connect to https://{pod}-{port}.proxy.runpod.net (expose HTTP port {port} "
                     "on the pod; the proxy adds TLS)")
    return lines


def bind_warning(host: str, tls: bool) -> str | None:
    """The warning for listening beyond loopback without TLS (None when there is nothing to say)."""
    from app.server.auth import is_loopback

    if is_loopback(host) or tls:
        return None
    return (f"warning: listening on {host} without TLS: the token and every image cross the network in clear "
            "text. Prefer --host 127.0.0.1 with an ssh tunnel, --tls-cert/--tls-key, or a proxy that adds "
            "TLS (Runpod's https proxy does)")


def cmd_serve(args: argparse.Namespace) -> int:
    from app.cli import CliError
    from app.server.auth import TokenError, load_or_make_token

    if bool(args.tls_cert) != bool(args.tls_key):
        raise CliError("--tls-cert and --tls-key go together")
    for f in (args.tls_cert, args.tls_key):
        if f is not None and not Path(f).expanduser().is_file():
            raise CliError(f"{f}: no such file")
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port {args.port}: a port is 0-65535")
    if args.max_upload < 0:
        raise CliError("--max-upload must be a number of bytes >= 0")
    if args.data_dir is not None:
        data_dir = Path(args.data_dir).expanduser().resolve()
    else:
        from app.paths import data_dir as user_data_dir

        data_dir = user_data_dir() / "server"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        if args.models is not None:
            models = Path(args.models).expanduser().resolve()
            for sub in ("checkpoints", "loras"):
                (models / sub).mkdir(parents=True, exist_ok=True)
            os.environ["IMAGEBASH_MODELS"] = str(models)  # the catalog, Load Model and the trainer read it
    except OSError as exc:
        raise CliError(f"cannot create {exc.filename}: {exc.strerror}") from None
    try:
        token, where, _made = load_or_make_token(data_dir, args.token_file)
    except TokenError as exc:
        raise CliError(str(exc)) from None
    _configure_logging()

    import uvicorn

    from app.engine.executor import EngineSettings
    from app.server.app import create_app
    from app.server.state import ServerConfig, ServerState

    tls = args.tls_cert is not None
    token_line = (f"token: from {where}" if args.token_file is not None else
                  f"token: {token}   (kept in {where}, mode 0600; the same on every start)")
    warning = bind_warning(args.host, tls)

    def on_listen(port: int) -> None:
        print("\n".join(connect_lines(args.host, port, tls, token_line)), flush=True)
        if warning:
            print(warning, file=sys.stderr, flush=True)

    config = ServerConfig(data_dir, token, args.max_upload, tuple(args.preload), EngineSettings(device=args.device))
    state = ServerState(config, registry=getattr(args, "registry", None))
    app = create_app(state)
    uv = uvicorn.Config(app, host=args.host, port=args.port, access_log=False, log_level="info",
                        ws_ping_interval=WS_PING_SECONDS, ws_ping_timeout=WS_PING_TIMEOUT, ws_max_size=16 << 20,
                        timeout_graceful_shutdown=5,
                        ssl_certfile=str(args.tls_cert) if tls else None,
                        ssl_keyfile=str(args.tls_key) if tls else None)
    _raise_body_high_water()
    server = make_server(uv, on_listen)
    server.run()
    return 0 if server.started else 1


def _raise_body_high_water(limit: int = BODY_HIGH_WATER) -> None:
    """Let uvicorn buffer up to `limit` body bytes per request before pausing the socket: uploads
    then reach the app in big pieces (written and hashed 4 MB at a time, see app.server.blobs).
    uvicorn reads the limit from a module constant; a uvicorn without it is left as it is."""
    import importlib

    for name in ("uvicorn.protocols.http.httptools_impl", "uvicorn.protocols.http.h11_impl"):
        try:
            mod = importlib.import_module(name)
        except ImportError:  # httptools not installed: h11 only
            continue
        if isinstance(getattr(mod, "HIGH_WATER_LIMIT", None), int):
            mod.HIGH_WATER_LIMIT = max(mod.HIGH_WATER_LIMIT, limit)


def _configure_logging() -> None:
    """Server lines (preload progress, interrupted jobs, failures) on stderr; uvicorn has its own."""
    logger = logging.getLogger("app")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def make_server(config: Any, on_listen: Callable[[int], None]) -> Any:
    """A uvicorn server that calls `on_listen(port)` once its socket is bound (so --port 0 works)."""
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, telling `on_listen` the port once the socket is bound (port 0 works)."""

        def __init__(self, config: Any, on_listen: Callable[[int], None]) -> None:
            super().__init__(config)
            self.on_listen = on_listen

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started and getattr(self, "servers", None):
                port = self.servers[0].sockets[0].getsockname()[1]
                self.on_listen(int(port))

    return Server(config, on_listen)
