"""The audit log: one entry per successful mutating API call (``auditlog.db``, api.md §6)."""
