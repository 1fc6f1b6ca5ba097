"""Benchmarks of the gateway next to python-socketio; run with `python -m bench`."""
