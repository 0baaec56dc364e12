"""Scheduled commands and scripts: stored (replicated) schedules and the one runner."""
