"""auq.calibration."""
