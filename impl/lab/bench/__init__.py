"""Benchmarks: one module per `flk bench NAME`, each exporting run(args) -> dict."""
