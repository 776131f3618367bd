# Sourced by the top-level scripts: create/refresh the project venv (.venv) and activate it.
# Re-installs only when setup.cfg or pyproject.toml changed since the last install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TFMETA_VENV:-$root/.venv}"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "[tfmeta] creating virtual environment at $venv"
  "$py" -m venv "$venv"
fi
stamp="$venv/.tfmeta-installed"
if [ ! -f "$stamp" ] || [ "$root/setup.cfg" -nt "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo "[tfmeta] installing tfmeta[serving,search,dev] into $venv (first time: ~1 minute)"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e "$root[serving,search,dev]"
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
cd "$root"
