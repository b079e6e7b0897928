"""Plain nn.Module building blocks and the LightningModules built on them."""
