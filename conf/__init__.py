"""Hydra config groups shipped with idcluster (the top-level conf/ folder)."""
