"""Performance baselines: measurement, stored JSON baselines and their comparison."""
