"""Tools of this repository that both the tests and the benchmark use (not part of the app)."""
