"""multihome: admission webhook and NetworkPolicy enricher for multi-homed Pods."""

# The one place the version is written; pyproject.toml and the chart's appVersion follow it
# (tests/test_packaging.py checks).
__version__ = "0.2.0"
