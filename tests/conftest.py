"""Test-wide settings: offline hub, bounded threads, repository paths."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = REPO / "chapters"
