"""Shared pytest fixtures for the tfgpt test suite."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data directory (``../shared/data`` next to the repository root)."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"
