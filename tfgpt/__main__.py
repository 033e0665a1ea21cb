"""``python -m tfgpt`` runs the command line."""

from tfgpt.cli import entry

if __name__ == "__main__":
    raise SystemExit(entry())
