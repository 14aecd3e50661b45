#!/usr/bin/env bash
# Create .venv/ at the repository root and install the project with every extra, at the pinned versions: what
# development and CI use (TensorFlow, the GCP clients, the test tools; about 2 GB). To only sort folders,
# `pip install .` is enough (LiteRT, no TensorFlow): see the README.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
started=$SECONDS
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# pip's own output is long; show one line per package it resolves (one updating line on a terminal), keep the rest
# for when it fails.
progress() {
  awk -v tty="$([[ -t 1 ]] && echo 1 || echo 0)" '
    /^Collecting / { n++; if (tty) printf "\r  %d packages: %-50s", n, $2; else print "  " $2; fflush() }
    /^Installing collected packages/ { if (tty) printf "\n"; print "  installing " n+0 " packages..."; fflush() }'
}

if [[ ! -x .venv/bin/python ]]; then
  echo "[1/3] creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
else
  echo "[1/3] .venv exists: updating it"
fi
echo "[2/3] upgrading pip"
.venv/bin/python -m pip install --quiet --upgrade pip
echo "[3/3] installing imgclassify with every extra (TensorFlow, GCP clients, test tools; the first time takes a" \
     "minute or two)"
if ! .venv/bin/python -m pip install --progress-bar off -c constraints.txt -e ".[keras,gcp,dev]" 2>&1 \
    | tee "$log" | progress; then
  echo "pip failed; its last lines:" >&2
  tail -n 30 "$log" >&2
  exit 1
fi
echo "installed into $(pwd)/.venv in $((SECONDS - started)) s (run .venv/bin/imgclassify --help)"
