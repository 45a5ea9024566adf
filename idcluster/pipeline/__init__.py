"""The per-image stages (decode -> detect -> align -> embed) and the set-level ones (reduce -> cluster)."""
