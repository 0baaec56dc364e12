"""tunnels."""
