"""`lit-medxchat evaluate`: the paper's tables for a trained run, on a held-out split (see `cli.py`)."""
