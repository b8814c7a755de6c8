"""One script per schema change, oldest first."""
