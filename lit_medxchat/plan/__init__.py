"""`lit-medxchat plan`: build a config's model on the meta device and say what a run needs per GPU.

Modules, one job each: `architectures` (hub ids -> shipped config.json files), `build` (the config and
overrides `fit` would use -> a LightningModule on the meta device), `params` (parameter counts per part,
LoRA targets), `probe` (one meta forward + backward: saved activations and FLOPs), `memory` (bytes per
GPU for a strategy and precision, DeepSpeed's estimators), `report` (the printed plan) and `cli`.
"""
