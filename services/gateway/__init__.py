"""WebSocket gateway: client connections, channels with history and presence, the server API."""
