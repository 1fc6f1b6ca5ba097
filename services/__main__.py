"""`python -m services` and the `switchboard` console script: the local supervisor and its CLI."""

from services.cli.main import main as cli_main


def main() -> None:
    raise SystemExit(cli_main())


if __name__ == "__main__":
    main()
