"""Training: objectives today; the loop, checkpointed state and the recipe stages come next."""
