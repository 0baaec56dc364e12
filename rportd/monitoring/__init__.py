"""Client measurements (``save_measurement``) kept in ``monitoring.db``."""
