"""smallcode's data pipeline: corpus discovery, filtering, dedup, split, packing, resumable loading."""
