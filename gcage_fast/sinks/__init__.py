"""Sinks: sharded Parquet results with atomic commits, and PNG heatmap overlays."""
