"""On-demand TCP/UDP tunnels through connected clients."""
