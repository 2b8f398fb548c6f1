"""Tools for tests, benchmarks, the demo and the example-model script; not used by a running site."""
