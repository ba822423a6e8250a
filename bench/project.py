"""The repository's root, where manage.py is and where the servers under benchmark run.

The benchmark imports the test suite's daphne runner only once Django is set up
(tests/support.py imports models), so nothing it imports at start-up may import that module.
"""

from __future__ import annotations

from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
