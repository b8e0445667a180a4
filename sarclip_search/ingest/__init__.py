"""Archive → catalog rows + vectors: raster reading, radiometry, tiling, metadata, the indexer."""
