"""Substrate families, one module each: `gpt` (our decoder) and `hf` (Hugging Face folders).
A new family is a new module here implementing `substrate.Substrate` and a line in the registry.
"""
