# Sourced by bin/serve and bin/test: find Python 3.11+, make .venv, install the pinned
# dependencies (again only when pyproject.toml or constraints.txt changed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

extras="$1"
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
stamp=".venv/.installed-${inputs}-${extras:-runtime}"
if [ ! -f "$stamp" ]; then
    echo "Installing dependencies into .venv"
    # The project runs from its folder and is not itself installed: only what it depends on.
    .venv/bin/python - "$extras" > .venv/requirements.txt <<'PY'
import sys
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = [e for e in sys.argv[1].split(",") if e]
print("\n".join(project["dependencies"]))
for extra in extras:
    print("\n".join(project["optional-dependencies"][extra]))
PY
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        -c constraints.txt -r .venv/requirements.txt
    # Stamps of other inputs are stale; those of other extras with these inputs still hold.
    find .venv -maxdepth 1 -name '.installed-*' ! -name ".installed-${inputs}-*" -delete
    touch "$stamp"
fi
