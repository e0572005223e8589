"""auq.training."""
