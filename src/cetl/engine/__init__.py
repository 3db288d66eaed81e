"""The one training engine: loop, checkpoints, logging."""
