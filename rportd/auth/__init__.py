"""Authentication shared by the API and the client listener."""
