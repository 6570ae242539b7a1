"""Baselines measured side by side with camcast in the same bench run."""
