#!/usr/bin/env bash
# Build the one-folder bundle dist/imagebash/ with the active venv's python, then run its self-test.
#
#   packaging/build.sh            (from anywhere; PYTHON=/path/to/python to choose the interpreter)
#
# Installs PyInstaller into that venv when it is missing. Exits with the bundle's self-test status.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
py="${PYTHON:-python}"
if [ -z "${PYTHON:-}" ] && [ -n "${VIRTUAL_ENV:-}" ]; then
    py="$VIRTUAL_ENV/bin/python"
fi

if ! "$py" -c "import PyInstaller" 2>/dev/null; then
    echo "build.sh: installing pyinstaller into $("$py" -c 'import sys; print(sys.prefix)')"
    "$py" -m pip install --quiet "pyinstaller>=6.10"
fi

echo "build.sh: $("$py" -m PyInstaller --version | sed 's/^/PyInstaller /') with $("$py" --version)"
start=$(date +%s)
"$py" -m PyInstaller packaging/imagebash.spec --noconfirm --clean --log-level "${PYI_LOG_LEVEL:-WARN}"
echo "build.sh: built dist/imagebash in $(( $(date +%s) - start ))s, $(du -sh dist/imagebash | cut -f1)"

case "$(uname -s)" in
    MINGW*|MSYS*|CYGWIN*) exe=dist/imagebash/imagebash.exe ;;
    *) exe=dist/imagebash/imagebash ;;
esac
status=0
# the self-test must not lean on the source tree or a display: run it from another folder
(cd "${TMPDIR:-/tmp}" && "$repo/$exe" --self-test) || status=$?
echo "build.sh: self-test exit status $status"
exit "$status"
