"""sarclip-search: retrieval over SAR imagery with a CLIP-style model, FAISS and DuckDB.

Kept import-light on purpose: `import sarclip_search` loads neither torch nor faiss.
"""

__version__ = "0.1.0"
