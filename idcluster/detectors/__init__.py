"""Face detectors: `detect(image RGB uint8) -> list[Face]`, plus `model_id` for cache keys."""
