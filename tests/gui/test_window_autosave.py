"""Autosave: unsaved work reaches the data folder every interval; after a crash it comes back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from app import paths
from app.graph.io import graph_to_dict

CRASHING_SESSION = textwrap.dedent('''
    import json, os, sys, time
    from PySide6.QtWidgets import QApplication
    app = QApplication([])
    from app.ui.settings import Settings
    from app.ui.window import MainWindow
    s = Settings(); s.set("ui/autosave_interval_s", 0.1)
    win = MainWindow(s, ask_restore=lambda entries: False)
    win.show()
    doc = win.current_document()
    doc.set_param("blend", "opacity", 0.9)
    new = doc.add_node("imagebash.image.invert", (600, 40))
    doc.connect("grade", "image", new, "image")
    untitled = win.new_document().document
    untitled.add_node("imagebash.image.gradient", (0, 0), {"width": 77})
    deadline = time.time() + 20
    while win.autosave.save_now() == 0 and time.time() < deadline:
        app.processEvents()
    from app.graph.io import graph_to_dict
    with open(sys.argv[1], "w") as f:
        json.dump([graph_to_dict(doc.graph), graph_to_dict(untitled.graph)], f)
    os._exit(3)  # a crash: no clean shutdown, the autosave and its lock stay behind
''')


def test_autosave_writes_changed_documents_and_clean_exit_removes_them(make_window, qtbot, tmp_path):
    win = make_window()
    folder = win.autosave.folder
    assert folder.parent == paths.data_dir() / "autosave"
    doc = win.current_document()
    assert not list(folder.glob("doc-*.json"))  # nothing unsaved yet: nothing written
    doc.set_param("blend", "opacity", 0.2)
    qtbot.waitUntil(lambda: len(list(folder.glob("doc-*.json"))) == 1, timeout=5000)
    data = json.loads(next(folder.glob("doc-*.json")).read_text())
    assert data["workflow"]["nodes"][2]["params"]["opacity"] == 0.2
    assert data["title"] == "blend_and_grade"

    win.ask_save_path = lambda d: tmp_path / "saved.json"
    win.save_current()
    assert not list(folder.glob("doc-*.json"))  # saved: the autosave is no longer needed
    doc.set_param("blend", "opacity", 0.3)
    qtbot.waitUntil(lambda: len(list(folder.glob("doc-*.json"))) == 1, timeout=5000)
    win.ask_unsaved = lambda d: "discard"
    win.close()
    assert not folder.exists()


def test_restore_after_a_crash(make_window, tmp_path):
    expected_file = tmp_path / "expected.json"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(paths.REPO_ROOT))
    proc = subprocess.run([sys.executable, "-c", CRASHING_SESSION, str(expected_file)], env=env,
                          cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    expected = json.loads(expected_file.read_text())

    offered = []
    win = make_window(ask_restore=lambda entries: offered.extend(entries) or True)
    assert sorted(e.title for e in offered) == ["Untitled", "blend_and_grade"]
    restored = [d for d in win.documents if d.is_dirty()]
    assert len(restored) == 2
    graphs = sorted((graph_to_dict(d.graph) for d in restored), key=lambda g: len(g["nodes"]))
    assert graphs == sorted(expected, key=lambda g: len(g["nodes"]))
    assert all(win.tabs.tabText(i).endswith("*") for i in range(win.tabs.count()))
    # the crashed session's files are gone; the restored work is autosaved in this session
    sessions = [p for p in (paths.data_dir() / "autosave").iterdir() if p.is_dir()]
    assert sessions == [win.autosave.folder]
    assert len(list(win.autosave.folder.glob("doc-*.json"))) == 2

    # a second window (another process would behave the same) does not offer a live session
    again = []
    make_window(ask_restore=lambda entries: again.extend(entries) or True)
    assert again == []


def test_declining_restore_discards_the_autosave(make_window, tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(paths.REPO_ROOT))
    proc = subprocess.run([sys.executable, "-c", CRASHING_SESSION, str(tmp_path / "e.json")], env=env,
                          cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    win = make_window(ask_restore=lambda entries: False)
    assert not any(d.is_dirty() for d in win.documents)
    sessions = [p for p in (paths.data_dir() / "autosave").iterdir() if p.is_dir()]
    assert sessions == [win.autosave.folder]
