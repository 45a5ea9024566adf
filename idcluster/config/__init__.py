"""Config: Hydra compose at the edge, the TOML project file."""
