"""Head pose per face and the views it falls into."""
