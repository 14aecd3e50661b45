#!/usr/bin/env bash
# Create .venv/ at the repository root and install the project with every extra, at the pinned versions.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[keras,litert,gcp,dev]"
echo "installed into $(pwd)/.venv (run .venv/bin/imgclassify --help)"
