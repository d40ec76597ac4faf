"""Fuzzing the command line in-process: `imagebash run`, `validate` and `nodes` with random
workflow files and random arguments (`--set` values, `--node` ids, `--output-dir`).

Properties: the exit status is 0, 1 (a node failed) or 2 (bad input); bad input is said on
stderr in `imagebash: error:` lines (one per problem, one for anything else), never with a
traceback; and a run writes nothing outside its output folder, whatever the Save nodes'
`filename_prefix` says (`../`, absolute paths, `~`, a symlink inside the output folder).
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from app.cli import main
from tests.fuzz import NAMES, examples, maybe, tree, workflow_docs, writes_outside

pytestmark = pytest.mark.timeout(240)

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLE_PNG = ROOT / "resources" / "samples" / "shapes.png"
SAMPLE_CLIP = ROOT / "resources" / "samples" / "clip.mp4"

#: 100,000 nested arrays: the recent depth limit, through the whole command.
DEEP = "[" * 100_000 + "]" * 100_000

#: Prefixes that try to leave the output folder; "<outside>" is replaced by an absolute path to
#: a folder beside it, and "link" is (when the example says so) a symlink in the output folder
#: that points there.
PREFIXES = st.one_of(
    st.sampled_from(["imagebash", "../escape", "../../escape", "<outside>/abs", "link/through", "~/home",
                     "~root/x", "..", ".", "", "/", "//x", "a/../../b", "..\\..\\win", "sub/dir/x", "x\x00y",
                     "con", "a" * 300, "shots/" * 30 + "x", " .. / .. /x", "\u202e\u0041", "é/ü"]),
    st.text(max_size=10))

#: Parameter values for the few parameters a fuzzed run sets (sizes stay small: a run is fast).
SMALL = st.integers(1, 12)


@st.composite
def media_workflows(draw: st.DrawFn) -> dict:
    """A runnable workflow of image/video nodes: a source, maybe a video, one or two Save nodes."""
    nodes: list[dict] = []
    links: list[dict] = []
    source = draw(st.sampled_from(["solid", "gradient", "load", "load_video"]))
    if source == "solid":
        nodes.append({"id": "src", "type": "imagebash.image.solid_color",
                      "params": {"width": draw(SMALL), "height": draw(SMALL), "color": draw(
                          st.sampled_from(["#ff0000", "#00ff0080", "red", "", "#zz"]))}})
    elif source == "gradient":
        nodes.append({"id": "src", "type": "imagebash.image.gradient",
                      "params": {"width": draw(SMALL), "height": draw(SMALL)}})
    elif source == "load":
        path = draw(st.sampled_from([str(SAMPLE_PNG), "missing.png", "../in.png", "in.png", "", "\x00.png",
                                     "~nobody_here/x.png", str(SAMPLE_CLIP), "a" * 300 + ".png"]))
        nodes.append({"id": "src", "type": "imagebash.image.load", "params": {"path": path}})
    else:
        nodes.append({"id": "src", "type": "imagebash.video.load",
                      "params": {"path": draw(st.sampled_from([str(SAMPLE_CLIP), "missing.mp4", "in.png"])),
                                 "max_frames": draw(st.integers(0, 4))}})
    out_port = "video" if source == "load_video" else "image"
    for i in range(draw(st.integers(1, 2))):
        prefix = draw(PREFIXES)
        if draw(st.booleans()):
            nodes.append({"id": f"save{i}", "type": "imagebash.image.save",
                          "params": {"filename_prefix": prefix,
                                     "format": draw(st.sampled_from(["png", "jpeg", "webp"]))}})
        else:
            nodes.append({"id": f"save{i}", "type": "imagebash.video.save",
                          "params": {"filename_prefix": prefix, "codec": draw(st.sampled_from(["mp4v", "mjpg"]))}})
        links.append({"from": ["src", out_port], "to": [f"save{i}", "image" if "image.save" in nodes[-1]["type"]
                                                        else "video"]})
    return {"format": "imagebash/1", "nodes": nodes, "links": links}


def solid_to_save(prefix: str, save: str = "imagebash.image.save", width: int = 8) -> dict:
    """A solid colour into one Save node with `prefix`: the shape of a hand-picked example."""
    port = "image" if save == "imagebash.image.save" else "video"
    return {"format": "imagebash/1", "links": [{"from": ["src", "image"], "to": ["save0", port]}], "nodes": [
        {"id": "src", "type": "imagebash.image.solid_color", "params": {"width": width, "height": 6}},
        {"id": "save0", "type": save, "params": {"filename_prefix": prefix}}]}


SETS = st.lists(st.one_of(
    st.tuples(st.sampled_from(["save0", "save1", "src", "nope"]),
              st.sampled_from(["filename_prefix", "format", "quality", "width", "color", "path", "zz"]),
              st.one_of(PREFIXES, SMALL.map(str), st.sampled_from(["NaN", "1e400", "[", "null", "png", "gif"])))
    .map(lambda t: f"{t[0]}.{t[1]}={t[2]}"),
    st.text(max_size=8)), max_size=2)

OUTPUT_DIRS = st.sampled_from(["out", "out/nested/deeper", "./out", "<abs>", "", "."])


def _stderr_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [ln for ln in err.splitlines() if ln.strip()]


def _check_exit(rc: int, err: str) -> None:
    lines = _stderr_lines(err)
    assert rc in (0, 1, 2), (rc, err)
    if rc == 2:
        errors = [ln for ln in lines if not ln.startswith("imagebash: note:")]
        assert errors, "exit 2 without saying why"
        assert all(ln.startswith("imagebash: error:") for ln in errors), lines
    if rc == 1:
        assert any(ln.startswith("imagebash: node '") and " failed: " in ln for ln in lines), lines


def _case_dirs(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """(root, work folder, a folder beside the output) for one example: all under a fresh root."""
    root = pathlib.Path(tempfile.mkdtemp(dir=tmp_path))
    work, outside = root / "work", root / "outside"
    work.mkdir()
    outside.mkdir()
    (work / "in.png").write_bytes(b"not an image")
    (root / "in.png").write_bytes(SAMPLE_PNG.read_bytes())
    return root, work, outside


@examples(30)
@given(doc=media_workflows(), output=OUTPUT_DIRS, sets=maybe(st.just([]), 3, SETS),
       targets=maybe(st.just([]), 3, st.lists(st.sampled_from(["src", "save0", "nope", "a\nb", "", "-x"]), max_size=2)),
       link=st.booleans())
@example(doc=solid_to_save("../../escape"), output="out", sets=["-x", "save0.filename_prefix=<outside>/x"],
         targets=["-x"], link=False)
@example(doc=solid_to_save("link/through"), output="out", sets=[], targets=[], link=True)
@example(doc=solid_to_save("x", "imagebash.video.save", width=4), output="<abs>", sets=["save0.codec=mjpg"],
         targets=[], link=False)  # a 4 px wide MJPG clip: OpenCV's encoder aborted the process
def test_run_writes_only_into_its_output_folder(doc, output, sets, targets, link, tmp_path, monkeypatch, capsys,
                                                media_reg):
    root, work, outside = _case_dirs(tmp_path)
    doc = json.loads(json.dumps(doc).replace("<outside>", str(outside)))
    sets = [item.replace("<outside>", str(outside)) for item in sets]
    out = (root / "abs-out") if output == "<abs>" else (work / output if output else work / "output")
    if link:  # a symlink inside the output folder that points outside it
        out.mkdir(parents=True, exist_ok=True)
        (out / "link").symlink_to(outside, target_is_directory=True)
    wf = work / "w.json"
    wf.write_text(json.dumps(doc))
    monkeypatch.chdir(work)
    before = tree(root)
    argv = ["run", str(wf), "--quiet"]
    if output:
        argv += ["--output-dir", str(out) if output == "<abs>" else output]
    argv += [f"--set={item}" for item in sets]  # the '=' form: an item may start with '-'
    argv += [f"--node={t}" for t in targets]
    rc = main(argv, registry=media_reg)
    err = capsys.readouterr().err
    event(f"exit {rc}" + (" (through the symlink: refused)" if "leaves the output directory" in err else ""))
    _check_exit(rc, err)
    stray = writes_outside(root, before, out)
    assert not stray, f"wrote outside the output folder {out}: {stray}"


@examples(60)
@given(doc=workflow_docs(), cmd=st.sampled_from(["run", "validate"]))
@example(doc=DEEP, cmd="run")  # the depth limit: exit 2 and one line, not RecursionError
@example(doc=DEEP, cmd="validate")
@example(doc="{not json", cmd="run")
@example(doc=b"\x89PNG\r\n\x1a\n\x00", cmd="validate")
@example(doc={"format": "imagebash/1", "nodes": [{"id": "a", "type": "imagebash.image.blend",
                                                  "params": {"opacity": 10**400}}]}, cmd="validate")
def test_any_workflow_file_exits_cleanly(doc, cmd, tmp_path, monkeypatch, capsys, media_reg):
    root, work, _ = _case_dirs(tmp_path)
    wf = work / "w.json"
    if isinstance(doc, bytes):
        wf.write_bytes(doc)
    else:
        wf.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    monkeypatch.chdir(work)
    before = tree(root)
    rc = main([cmd, str(wf), "--output-dir", "out"] if cmd == "run" else [cmd, str(wf)], registry=media_reg)
    captured = capsys.readouterr()
    _stderr_lines(captured.err)
    assert rc in (0, 1, 2), (rc, captured.err)
    if cmd == "validate":
        problems = _stderr_lines(captured.err)
        if rc == 0:
            assert "ok (" in captured.out and not [ln for ln in problems if "error" in ln]
        else:
            assert problems and all(ln.startswith((str(wf), "imagebash: error:", "imagebash: note:"))
                                    for ln in problems), problems
    else:
        _check_exit(rc, captured.err)
    assert not writes_outside(root, before, work / "out")


def test_deep_workflow_is_exit_2_and_one_line(tmp_path, monkeypatch, capsys, media_reg):
    """The recent depth limit through the whole command, `imagebash run` with its default ./output."""
    wf = tmp_path / "deep.json"
    wf.write_text(DEEP)
    monkeypatch.chdir(tmp_path)
    for cmd in ("run", "validate"):
        assert main([cmd, str(wf)], registry=media_reg) == 2
        lines = _stderr_lines(capsys.readouterr().err)
        assert len(lines) == 1 and "nested too deeply" in lines[0] and str(wf) in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep.json"]


ARG_TOKENS = st.one_of(
    st.sampled_from(["--set", "--node", "--output-dir", "--device", "cpu", "cuda", "mps", "tpu", "--quiet", "-q",
                     "--json", "--", "-x", "--help", "--version", "<wf>", "<bad>", "a.b=1", "src.width=3",
                     "save0.filename_prefix=../x", "=", "src", "out", "image", "NaN"]),
    NAMES, st.text(max_size=6))


@examples(60)
@given(cmd=st.sampled_from(["run", "validate", "nodes"]), rest=st.lists(ARG_TOKENS, max_size=6))
def test_any_arguments_exit_cleanly(cmd, rest, tmp_path, monkeypatch, capsys, media_reg):
    """argparse's own refusals exit 2 with its usage line; everything else as for run/validate."""
    root, work, _ = _case_dirs(tmp_path)
    wf = work / "w.json"
    wf.write_text(json.dumps({"format": "imagebash/1", "nodes": [
        {"id": "src", "type": "imagebash.image.solid_color", "params": {"width": 4, "height": 4}},
        {"id": "save0", "type": "imagebash.image.save"}],
        "links": [{"from": ["src", "image"], "to": ["save0", "image"]}]}))
    bad = work / "bad.json"
    bad.write_text("{")
    argv = [cmd] + [{"<wf>": str(wf), "<bad>": str(bad)}.get(t, t) for t in rest]
    if cmd != "nodes" and not any(t in ("<wf>", "<bad>") for t in rest):
        argv.insert(1, str(wf))
    for i in range(len(argv) - 1):  # this machine's real folders are no place for a fuzzed run's output
        if argv[i] == "--output-dir" and (os.path.isabs(argv[i + 1]) or ".." in argv[i + 1]):
            argv[i + 1] = "out"
    monkeypatch.chdir(work)
    before = tree(root)
    try:
        rc = main(argv, registry=media_reg)
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2)
        captured = capsys.readouterr()
        assert exc.code in (0, 2), exc.code
        if exc.code == 2:  # argparse's usage line and its "imagebash ...: error: ..." line
            assert any(ln.startswith("imagebash") and "error:" in ln for ln in captured.err.splitlines()), captured.err
            assert "Traceback" not in captured.err
        return
    captured = capsys.readouterr()
    if cmd == "nodes":
        assert rc == 0
        if "--json" in argv:
            assert isinstance(json.loads(captured.out), list)
    else:
        _stderr_lines(captured.err)
        assert rc in (0, 1, 2), (rc, captured.err)
    # a run writes into its output folder only: --output-dir's value, or ./output
    outs = [argv[i + 1] for i, t in enumerate(argv[:-1]) if t == "--output-dir"]
    out = work / (outs[-1] if outs else "output")
    stray = writes_outside(root, before, out)
    assert not stray, f"wrote outside {out}: {stray}"
