"""The client-facing wire protocol: WebSocket, SSH and the rport payloads."""
