"""What an index directory holds: the DuckDB catalog, filters, the generation layout, its check."""
