"""The content-addressed stage cache and its maintenance."""
