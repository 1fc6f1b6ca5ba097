"""Shared library of every service: settings, auth, Redis bus, codecs, metrics, runner."""
