#!/usr/bin/env bash
# The main job: the whole MedXChat loop on the built-in dataset. Extra arguments go to `lit-medxchat demo`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup-venv.sh"
venv=${LIT_MEDXCHAT_VENV:-$root/.venv}
exec "$venv/bin/lit-medxchat" demo --out "${LIT_MEDXCHAT_DEMO_OUT:-$root/runs/demo}" "$@"
