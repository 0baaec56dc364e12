"""api/views."""
