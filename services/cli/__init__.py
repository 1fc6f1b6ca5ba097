"""The `switchboard` command line: the local supervisor, tokens, and a client of every service."""
