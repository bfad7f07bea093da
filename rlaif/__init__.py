"""rlaif: RLAIF with an open judge."""
__version__ = "0.1.0"
