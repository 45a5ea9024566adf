"""Clusterers, the kNN graph, constraints and the shared post-processing."""
