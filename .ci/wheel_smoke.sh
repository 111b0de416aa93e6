#!/usr/bin/env bash
# The wheel as a user gets it: build it, install it into a clean venv (torch pinned first, the
# CPU build; then the wheel alone, no extra) and run .ci/wheel_smoke.py from an empty folder,
# so that only the installed package is importable.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=$(mktemp -d)
trap 'rm -rf "$smoke"' EXIT
echo "+ wheel smoke test in $smoke"
python3 -m venv "$smoke/venv"
# --no-compile: byte-compiling torch's ~20k modules took 1 of the 2 minutes of its install
"$smoke/venv/bin/pip" install -q --no-compile torch==2.13.0
"$smoke/venv/bin/pip" wheel -q --no-deps -w "$smoke/dist" .
"$smoke/venv/bin/pip" install -q "$smoke"/dist/optimkit-*.whl
mkdir "$smoke/empty"
test_script="$PWD/.ci/wheel_smoke.py"
(cd "$smoke/empty" && "$smoke/venv/bin/python" -I "$test_script")
