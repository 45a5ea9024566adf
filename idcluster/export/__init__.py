"""The output: identity folders and identity_clustering.json, training sets, contact sheets."""
