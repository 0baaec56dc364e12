"""rportd: a drop-in, high-availability replacement for the RPort server."""

__version__ = "0.1.0"
