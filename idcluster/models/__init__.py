"""Finding, downloading, converting and running model weights."""
