"""Test helpers shipped with dwray for plugin authors: conformance suites that
every implementation of a contract subclasses (they need pytest installed)."""
