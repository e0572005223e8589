"""auq.plots."""
