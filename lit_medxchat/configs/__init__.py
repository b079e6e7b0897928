"""Shipped LightningCLI configs: tiny (tests), demo (CPU), paper (GPU nodes)."""
