"""packaging/cloud: the Dockerfile, the Lambda install script and systemd unit, and the README
use one `imagebash serve` command line each, and those parse with the real `serve` options;
the container's entry point, run as a process here (paths moved to tmp), starts, warns that
it listens beyond loopback without TLS, and prints the Runpod proxy URL."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess

import httpx

from app.engine.protocol import API
from app.paths import REPO_ROOT
from app.server.cli import register

CLOUD = REPO_ROOT / "packaging" / "cloud"


def serve_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    assert argv[1] == "serve" and (argv[0] == "imagebash" or argv[0].endswith("/bin/imagebash")), argv
    return parser.parse_args(argv[1:])


def dockerfile() -> dict[str, list[str]]:
    text = (CLOUD / "Dockerfile").read_text().replace("\\\n", " ")
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.setdefault(word.upper(), []).append(rest.strip())
    return out


def entrypoint() -> list[str]:
    (ep,) = dockerfile()["ENTRYPOINT"]
    return json.loads(ep)


def test_dockerfile_recipe():
    d = dockerfile()
    (base,) = d["FROM"]
    assert base.startswith("nvidia/cuda:") and "runtime" in base
    runs = " ".join(d["RUN"])
    assert re.search(r"pip install torch --index-url https://download\.pytorch\.org/whl/cu\d+", runs)
    assert "pip install -e ." in runs  # in place, so resources/ (model configs) is found
    assert d["EXPOSE"] == ["8188"] and d["VOLUME"] == ['["/workspace"]']
    assert any("/api/v1/health" in h for h in d["HEALTHCHECK"])
    argv = entrypoint()
    args = serve_args(argv)
    assert (args.host, args.port, str(args.data_dir), str(args.models)) == \
        ("0.0.0.0", 8188, "/workspace/imagebash", "/workspace/models")
    ignore = (CLOUD / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignore and ".git" in ignore


def test_the_entrypoint_runs_and_says_how_to_connect(spawn, tmp_path):
    argv = entrypoint()[2:]  # the serve options, with the port and the folders moved to tmp
    moved = {"--port": "0", "--data-dir": str(tmp_path / "workspace-data"),
             "--models": str(tmp_path / "workspace-models")}
    argv = [moved.get(prev, a) for prev, a in zip(["", *argv[:-1]], argv, strict=True)]
    assert argv.count("0") == 1 and str(tmp_path / "workspace-data") in argv
    p = spawn(module="app", command=("serve",), args=tuple(argv), env={"RUNPOD_POD_ID": "pod42"},
              data_dir=tmp_path / "workspace-data")
    assert "warning: listening on 0.0.0.0 without TLS" in p.output
    assert f"https://pod42-{p.port}.proxy.runpod.net" in p.output
    assert (tmp_path / "workspace-models" / "loras").is_dir()
    with httpx.Client(base_url=p.url, timeout=30) as c:
        assert c.get(f"{API}/health").status_code == 200
        assert c.get(f"{API}/info").status_code == 401
        assert c.get(f"{API}/info", headers=p.headers()).status_code == 200


def test_lambda_recipe():
    script = CLOUD / "lambda" / "install.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    torch_index = re.search(r"https://download\.pytorch\.org/whl/cu\d+", text).group(0)
    assert torch_index in (CLOUD / "Dockerfile").read_text()  # one CUDA build for both recipes
    assert 'pip" install -e "$SRC"' in text
    unit = (CLOUD / "lambda" / "imagebash.service").read_text()
    fields = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    args = serve_args(shlex.split(fields["ExecStart"]))
    assert args.host == "127.0.0.1" and args.port == 8188
    assert fields["User"] == "ubuntu" and fields["Restart"] == "on-failure"


def test_readme_commands_are_the_recipes():
    readme = (CLOUD / "README.md").read_text()
    assert " ".join(entrypoint()) in readme
    unit = (CLOUD / "lambda" / "imagebash.service").read_text()
    exec_start = next(line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start in readme
    assert "ssh -L 8188:127.0.0.1:8188 ubuntu@<IP>" in readme
    assert "bash packaging/cloud/lambda/install.sh" in readme
    assert "docker build -f packaging/cloud/Dockerfile" in readme
    commands = [line.strip().strip("'`") for line in readme.splitlines() if " serve " in line and "imagebash" in line
                and line.startswith("    ") and not line.strip().startswith(("imagebash serve:", "The unit"))]
    assert len(commands) >= 3  # the entry point, tmux, TLS (the unit's line is checked above)
    for line in commands:
        argv = shlex.split(line.replace("tmux new -d -s imagebash ", "").strip("'"))
        serve_args(argv)  # every command line in the README is one `serve` accepts


def test_readme_options_are_the_serve_options():
    from app.server.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    known = {o for a in parser._actions for o in a.option_strings} - {"-h", "--help"}
    rows = [line.split("|")[1] for line in (CLOUD / "README.md").read_text().splitlines() if line.startswith("| `--")]
    table = {o for cell in rows for o in re.findall(r"--[a-z-]+", cell)}
    assert table == known, (table, known)
