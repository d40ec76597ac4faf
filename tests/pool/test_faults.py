"""`imagebash run` on a pool: a Ray address that does not answer, engines that all refuse, the
local pool path of a Seeds sweep (one line each, nothing left running)."""

from __future__ import annotations

import pathlib

from app.cli import main
from app.graph.io import dumps
from tests.pool import helpers


def _workflow(tmp: pathlib.Path) -> pathlib.Path:
    p = tmp / "sweep.json"
    p.write_text(dumps(helpers.sweep(count=3, size=16)))
    return p


def test_unreachable_ray_address_is_one_line(tmp_path, capsys):
    rc = main(["run", str(_workflow(tmp_path)), "--ray", "ray://127.0.0.1:1", "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "does not answer" in err[0] and "127.0.0.1:1" in err[0]


def test_engines_without_a_token_are_named(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("IMAGEBASH_TOKEN", raising=False)
    monkeypatch.setattr("app.secrets.get_token", lambda name: None)
    rc = main(["run", str(_workflow(tmp_path)), "--engine", "http://127.0.0.1:9", "--engine", "http://127.0.0.1:10",
               "--no-local", "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "http://127.0.0.1:9: left out: no token" in err and "no engine can take the run" in err


def test_seeds_sweep_runs_through_the_pool_locally(tmp_path, capsys):
    rc = main(["run", str(_workflow(tmp_path)), "--output-dir", str(tmp_path / "o"), "-q"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert len(list((tmp_path / "o").glob("*.png"))) == 3 and "3 items" in out.err
