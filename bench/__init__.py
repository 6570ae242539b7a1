"""camcast benchmarks: `python -m bench` runs every suite and writes bench/results/<date>/report.md."""
