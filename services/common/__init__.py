"""Shared library of every Switchboard service: settings, auth, Redis bus, codecs, metrics, runner."""
