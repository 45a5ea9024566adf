"""Sweeps, MLflow tracking, metrics, evaluation against labels, demo data."""
