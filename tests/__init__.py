"""The test suite, a package so test modules share helpers (tests.conftest builds tiny real runs and bundles)."""
