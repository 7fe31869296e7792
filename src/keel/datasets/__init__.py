"""Datasets: file formats (JSONL, CSV, Parquet), streamed import/export, curation from traces."""
