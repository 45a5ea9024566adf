"""idcluster: group images of characters by who they are."""

__version__ = "0.1.0"
