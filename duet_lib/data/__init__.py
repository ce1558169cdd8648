"""Datasets of the book: the procedural world, real QMUL-V2 / Sketchy loaders,
stroke rasterisation and dataset manifests (chapter 01)."""
