"""Identity embedders.

Protocol: `align(image, face) -> chip` (each embedder owns its alignment),
`embed(chips) -> ndarray[n, d]` (L2-normalised float32), `model_id` (name +
weights hash, part of cache keys) and `dim`; each also declares `alignment`
(template), `input_size` (chip side, px) and `normalisation` (as text).
"""
