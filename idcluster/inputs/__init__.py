"""Inputs: scanning the input folder, content hashes, decoding images."""
