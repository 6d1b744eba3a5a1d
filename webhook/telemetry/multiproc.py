"""Where gunicorn workers write their metrics, so /metrics on any worker reports them all.

prometheus_client decides at import time whether values are per-process files, so
the directory must be exported before anything imports it: this module must not.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Final

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics_directory() -> Path:
    """A fresh directory for multiprocess metrics, exported in the environment."""
    base = os.environ.get("MULTIHOME_TMP_DIR") or tempfile.gettempdir()
    directory = Path(tempfile.mkdtemp(prefix="multihome-metrics-", dir=base))
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory
