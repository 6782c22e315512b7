"""Data layer: canonical tables, the simulator, adapters, validation and parquet I/O."""
