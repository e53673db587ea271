#!/usr/bin/env bash
# The package as a user installs it: build the sdist and the wheel (uv builds
# the wheel from the sdist, so a file the sdist leaves out fails too), install
# the wheel into a fresh virtual environment outside the source tree with the
# lock's production dependencies only (hashes checked), and run
# .ci/smoke_wheel.py from outside the tree: first on that production install,
# then again after adding the dev extra (migrate and load need a PostgreSQL).
# A file missing from the package data (migrations, demo data, pom.xml,
# log4j2.properties) fails here.
#
# Usage: .ci/smoke_wheel.sh [UV]   (the uv binary; default: uv on PATH)
# PostgreSQL: DATABASE_URL when set (a database of its own), else embedded.
set -euo pipefail
source_dir=$(cd "$(dirname "$0")/.." && pwd)
uv=${1:-uv}
started=$SECONDS
work=$(mktemp -d "${TMPDIR:-/tmp}/ar-wheel-XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$source_dir"

python=$(python3 -c "import sys; print(sys.executable)")  # the interpreter itself, not a shim
"$uv" build --quiet --python "$python" --out-dir "$work/dist"
wheels=("$work"/dist/assessment_refresh-*.whl)
sdists=("$work"/dist/assessment_refresh-*.tar.gz)
[[ -f ${wheels[0]} && -f ${sdists[0]} ]] || { echo "smoke: no wheel or sdist in $work/dist" >&2; exit 1; }
echo "smoke: built $(basename "${sdists[0]}") and $(basename "${wheels[0]}")"

# --no-dev: no dependency group (uv's "dev" group, not our dev extra) is exported.
"$uv" export --frozen --no-dev --no-emit-project --quiet > "$work/base.txt"
"$uv" export --frozen --no-dev --no-emit-project --quiet --extra dev > "$work/dev.txt"

"$uv" venv --quiet --python "$python" "$work/venv"
# Every `uv pip` names the venv's interpreter: an inherited VIRTUAL_ENV or
# UV_PYTHON must never point it at another environment.
venv_python="$work/venv/bin/python"
"$uv" pip install --quiet --python "$venv_python" --require-hashes -r "$work/base.txt"
"$uv" pip install --quiet --python "$venv_python" --no-deps "${wheels[0]}"
"$uv" pip check --quiet --python "$venv_python"  # the wheel's own requirements are met by the locked ones
cd "$work"  # outside the source tree: nothing can be imported from it
"$venv_python" "$source_dir/.ci/smoke_wheel.py" base "$source_dir"

"$uv" pip install --quiet --python "$venv_python" --require-hashes -r "$work/dev.txt"
"$venv_python" "$source_dir/.ci/smoke_wheel.py" dev "$source_dir"
echo "smoke: the wheel passed in $((SECONDS - started)) s"
