#!/usr/bin/env bash
# `fabric run` (the lightning package's launcher, successor of `lightning run model`) on one node of N.
#
#   NUM_NODES=2 NODE_RANK=0 MAIN_ADDRESS=10.0.0.1 DEVICES=8 cluster/fabric-run.sh \
#       --config paper/chat --trainer.default_root_dir runs/chat --ckpt_path last
#
# Run the same command on every node with its NODE_RANK. Everything you pass goes to `lit-medxchat fit`
# after `--`, because `fabric run` would otherwise take same-named options (--devices, --precision, ...).
set -euo pipefail
NUM_NODES=${NUM_NODES:-1}
NODE_RANK=${NODE_RANK:-0}
MAIN_ADDRESS=${MAIN_ADDRESS:-127.0.0.1}
MAIN_PORT=${MAIN_PORT:-29500}
DEVICES=${DEVICES:-1}
ACCELERATOR=${ACCELERATOR:-cuda}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/lit-medxchat/torch_extensions}
script=$(python -c "import lit_medxchat.cli as m; print(m.__file__)")
# `fabric run` wraps torchrun; the Trainer inside detects torchelastic and uses the ranks it was given. Nodes and
# devices go after your options: a later `--config` would otherwise reset them to the config's values.
exec fabric run --accelerator "$ACCELERATOR" --devices "$DEVICES" --num-nodes "$NUM_NODES" \
    --node-rank "$NODE_RANK" --main-address "$MAIN_ADDRESS" --main-port "$MAIN_PORT" \
    "$script" -- fit "$@" \
    --trainer.num_nodes "$NUM_NODES" --trainer.devices "$DEVICES"
