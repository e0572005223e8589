"""auq.models."""
