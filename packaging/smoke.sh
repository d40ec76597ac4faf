#!/usr/bin/env bash
# Smoke test of the bundle from scratch (heavy: a few GB, 10-20 minutes; not part of CI):
# copy the working tree to a temporary folder, make a fresh venv there, install torch==2.13.0
# (pin your CUDA build instead with TORCH_SPEC=...), the repo (`pip install .`) and PyInstaller,
# then run packaging/build.sh with that venv. Exits with the bundle's self-test status.
#
#   packaging/smoke.sh > smoke.log 2>&1        SMOKE_KEEP=1 keeps the temporary folder
#
# The checkout itself is left untouched: the venv, build/ and dist/ all live in the temporary folder.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base_python="${PYTHON:-python3}"
torch_spec="${TORCH_SPEC:-torch==2.13.0}"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/imagebash-smoke.XXXXXX")"
cleanup() {
    if [ "${SMOKE_KEEP:-0}" = 1 ]; then echo "smoke.sh: kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

start=$(date +%s)
step() { echo "smoke.sh: [$(( $(date +%s) - start ))s] $*"; }

step "copying the working tree (tracked and untracked, not ignored) to $tmp/src"
mkdir -p "$tmp/src"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$tmp/src"

step "fresh venv with $("$base_python" --version)"
"$base_python" -m venv "$tmp/venv"
py="$tmp/venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
step "installing $torch_spec"
"$py" -m pip install --quiet "$torch_spec"
step "installing the repo"
(cd "$tmp/src" && "$py" -m pip install --quiet .)
step "installing pyinstaller"
"$py" -m pip install --quiet "pyinstaller>=6.10"
if "$py" -c "import torchvision" 2>/dev/null; then
    echo "smoke.sh: torchvision got installed; the app must not depend on it" >&2
    exit 1
fi

step "building"
status=0
PYTHON="$py" bash "$tmp/src/packaging/build.sh" || status=$?
step "done: self-test exit status $status; venv $(du -sh "$tmp/venv" | cut -f1)"
exit "$status"
