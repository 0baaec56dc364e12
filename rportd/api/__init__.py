"""The REST API on ``[api] address``: envelope, auth middleware, views."""
