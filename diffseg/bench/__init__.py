"""Benchmarks: ``python -m diffseg.bench {data,...} [--json]`` prints a table or one JSON object."""
