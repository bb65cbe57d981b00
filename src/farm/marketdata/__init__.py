"""Market data: the Parquet bar store, the CSV/Parquet importer, the synthetic demo universe,
the ``farm data`` CLI and ``/api/data`` routes."""
