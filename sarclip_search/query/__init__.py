"""Queries over a committed index: the engine, fusion, relevance feedback and result files."""
