"""Puts the repository root on the import path of a benchmark run as a script
(``python benchmarks/x.py``): the research code and the simulations it uses are not
installed with the package (pyproject.toml), only checked out beside it."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
