"""Shared encoders: each runs once per frame, however many viewers there are."""
