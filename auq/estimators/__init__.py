"""auq.estimators."""
