"""auq.data."""
