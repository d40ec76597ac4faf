"""`imagebash` with no arguments: the window paints without importing torch."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from app import paths


def test_first_paint_without_torch(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", IMAGEBASH_EXIT_AFTER_FIRST_PAINT="1",
               PYTHONPATH=str(paths.REPO_ROOT))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "app"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r"^first_paint_s=(\d+\.\d+)$", proc.stdout, re.M)
    assert m, proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "app.ui.window" in imported  # the window really was built
    heavy = {name for name in imported if name.split(".")[0] in ("torch", "diffusers", "transformers", "cv2")}
    assert not heavy, sorted(heavy)[:10]
    # a clean benchmark exit leaves no autosave session behind to "restore" next time
    autosave = paths.data_dir() / "autosave"
    assert not autosave.exists() or not any(p.is_dir() for p in autosave.iterdir())
