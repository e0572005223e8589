"""auq.integrations."""
