"""Data: where MNIST comes from and the Zarr store it lives in (sources, ingest, stages, verify, info)."""
