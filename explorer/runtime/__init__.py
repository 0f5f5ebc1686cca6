"""Applies a method inside a stock transformers forward pass: probe, cut, decode, timing, FLOPs."""
