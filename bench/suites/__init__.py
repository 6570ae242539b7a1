"""Benchmark suites: one module per feature, each exposing SUITE (a bench.runner.Suite)."""
