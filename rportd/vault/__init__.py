"""The vault: secrets stored encrypted in ``vault.sqlite.db`` (api.md §4.10, storage.md §8)."""
