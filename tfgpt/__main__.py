"""``python -m tfgpt`` runs the command line."""

from tfgpt.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
