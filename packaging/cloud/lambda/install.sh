#!/usr/bin/env bash
# imagebash serve in a plain virtual environment on a Lambda (or any Ubuntu + NVIDIA driver) box.
# Run as the login user (ubuntu) from a checkout of the repository:
#
#   bash packaging/cloud/lambda/install.sh
#
# It makes ~/imagebash-venv (the CUDA build of torch from the PyTorch index, then imagebash),
# ~/imagebash-data (jobs, uploads, outputs, the token) and ~/models/{checkpoints,loras}. Put the
# models on a Lambda persistent filesystem (/lambda/nfs/<name>) instead with MODELS=/lambda/nfs/<name>/models.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
VENV="${VENV:-$HOME/imagebash-venv}"
DATA="${DATA:-$HOME/imagebash-data}"
MODELS="${MODELS:-$HOME/models}"

if ! python3 -m venv --help >/dev/null 2>&1; then
    sudo apt-get update && sudo apt-get install -y python3-venv
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --upgrade pip
"$VENV/bin/pip" install torch --index-url https://download.pytorch.org/whl/cu126
"$VENV/bin/pip" install -e "$SRC"  # in place: resources/ (model configs) stays beside the code
mkdir -p "$DATA" "$MODELS/checkpoints" "$MODELS/loras"

echo "installed: $VENV/bin/imagebash"
echo "run it in tmux:   tmux new -d -s imagebash '$VENV/bin/imagebash serve --data-dir $DATA --models $MODELS'"
echo "or as a service:  see packaging/cloud/lambda/imagebash.service"
echo "from your laptop: ssh -L 8188:127.0.0.1:8188 ubuntu@<instance IP>, then connect to http://127.0.0.1:8188"
