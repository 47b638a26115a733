"""The files an export of a model with global tokens ships beside its weights (read by transformers, not by us)."""
