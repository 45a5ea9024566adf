"""Identity embedders: one module per model family; the Protocol and shared base are in base.py."""
