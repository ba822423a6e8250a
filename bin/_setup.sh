# Sourced by bin/serve, bin/test and bin/bench: find Python 3.11+, make .venv, install the
# pinned dependencies of the given groups of pyproject.toml (again only when pyproject.toml or
# constraints.txt changed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

groups="$1"
python="${PYTHON:-}"
if [ -z "$python" ]; then
    for candidate in python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            python="$candidate"
            break
        fi
    done
fi
if [ -z "$python" ]; then
    echo "Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11 if it is not on PATH)." >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    echo "Creating .venv with $("$python" --version)"
    "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
fi
inputs=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
stamp=".venv/.installed-${inputs}-${groups}"
if [ ! -f "$stamp" ]; then
    echo "Installing dependencies into .venv"
    # The project runs from its folder and is not itself installed: only what it depends on
    # (the app's own dependencies and the groups asked for).
    .venv/bin/python - "$groups" > .venv/requirements.txt <<'PY'
import sys
import tomllib

pyproject = tomllib.load(open("pyproject.toml", "rb"))
print("\n".join(pyproject["project"]["dependencies"]))
for group in filter(None, sys.argv[1].split(",")):
    print("\n".join(pyproject["dependency-groups"][group]))
PY
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        -c constraints.txt -r .venv/requirements.txt
    # Stamps of other inputs are stale; those of other groups with these inputs still hold.
    find .venv -maxdepth 1 -name '.installed-*' ! -name ".installed-${inputs}-*" -delete
    touch "$stamp"
fi
