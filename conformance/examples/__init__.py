"""Example adapters for SDK authors (see conformance/README.md)."""
