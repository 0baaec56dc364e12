"""Simulated clients for monitoring tests (the job tests' fixtures)."""

from tests.jobs.conftest import sims, start_sim

__all__ = ["sims", "start_sim"]
