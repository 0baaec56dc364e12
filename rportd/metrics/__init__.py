"""Prometheus metrics: event instruments, scrape-time readings, the ``/metrics`` answer."""
