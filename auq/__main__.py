"""``python -m auq`` runs the command line (``auq --help``)."""

from auq.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
