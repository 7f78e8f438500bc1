#!/usr/bin/env bash
# Upgrading dependencies is a deliberate step: re-resolve the whole tree into constraints.txt (the
# constraints file both README commands and .ci/run install from), reinstall a fresh venv from it, and run
# the linters and the full suite. Commit the new lock only if everything passes.
#   scripts/refresh_lock.sh            re-resolve to the newest versions pyproject.toml allows
#   scripts/refresh_lock.sh PKG...     upgrade only these packages, keep every other pin
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=$(mktemp -d)/venv
python3 -m venv "$venv"
"$venv/bin/pip" install -q uv
upgrade=(--upgrade)
if (($# > 0)); then
    upgrade=()
    for pkg in "$@"; do upgrade+=(--upgrade-package "$pkg"); done
fi
"$venv/bin/uv" pip compile pyproject.toml --extra dev --extra otel --python-version 3.11 --no-header \
    "${upgrade[@]}" -o constraints.txt

# shellcheck disable=SC1091
. "$venv/bin/activate"
pip install -q -c constraints.txt -e ".[dev]"
ruff check .
ruff format --check .
mypy
pytest
git --no-pager diff --stat constraints.txt
echo "constraints.txt refreshed and the suite passed; review the diff above and commit it."
