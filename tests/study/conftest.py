"""Puts this folder on sys.path so the study tests (and tests/deploy) can import the helper
modules `study_helpers` and `cluster_helpers` (pytest runs with --import-mode=importlib,
which does not add test folders to sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
