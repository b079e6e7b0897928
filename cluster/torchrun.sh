#!/usr/bin/env bash
# torchrun on one node of N.
#
#   NUM_NODES=2 NODE_RANK=0 MAIN_ADDRESS=10.0.0.1 DEVICES=8 cluster/torchrun.sh \
#       --config paper/chat --trainer.default_root_dir runs/chat --ckpt_path last
#
# Run the same command on every node with its NODE_RANK; options are passed to `lit-medxchat fit`.
set -euo pipefail
NUM_NODES=${NUM_NODES:-1}
NODE_RANK=${NODE_RANK:-0}
MAIN_ADDRESS=${MAIN_ADDRESS:-127.0.0.1}
MAIN_PORT=${MAIN_PORT:-29500}
DEVICES=${DEVICES:-1}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/lit-medxchat/torch_extensions}
# The Trainer detects torchelastic's variables and uses its ranks: devices x num_nodes must match. They go
# after your options: a later `--config` would otherwise reset them to the config's values.
exec torchrun --nnodes "$NUM_NODES" --nproc-per-node "$DEVICES" --node-rank "$NODE_RANK" \
    --master-addr "$MAIN_ADDRESS" --master-port "$MAIN_PORT" \
    -m lit_medxchat.cli fit "$@" \
    --trainer.num_nodes "$NUM_NODES" --trainer.devices "$DEVICES"
