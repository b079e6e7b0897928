#!/usr/bin/env bash
# Creates ./.venv (or $LIT_MEDXCHAT_VENV) with the tested stack: the local CPU torch wheel, then the
# project with its test extras, pinned by requirements/constraints.txt. Re-running is cheap: the
# install is skipped while setup.cfg and the constraints are unchanged.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${LIT_MEDXCHAT_VENV:-$root/.venv}
python=${PYTHON:-python3}
stamp_src=$(cat "$root/setup.cfg" "$root/requirements/constraints.txt" | sha256sum | cut -c1-16)
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
if [ "$(cat "$venv/.lit-medxchat-stamp" 2>/dev/null)" != "$stamp_src" ]; then
  echo "[setup] installing torch 2.13.0 (CPU) and lit-medxchat[test] into $venv (1-3 minutes)"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "torch==2.13.0"
  # setuptools announces every editable install with a boxed "Editable installation" notice (information only,
  # printed even with -q); the install is ours and intended, so that one notice is not shown.
  PYTHONWARNINGS="ignore:Editable installation" \
    "$venv/bin/python" -m pip install -q -c "$root/requirements/constraints.txt" -e "$root[test]"
  echo "$stamp_src" > "$venv/.lit-medxchat-stamp"
fi
