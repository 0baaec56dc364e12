"""Schedule tests reuse the job tests' simulated clients."""

from __future__ import annotations

from tests.jobs.conftest import sims, start_sim

__all__ = ["sims", "start_sim"]
