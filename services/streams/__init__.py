"""Streams service: binary data streams in Redis Streams (PTG push/pull, the frames API)."""
