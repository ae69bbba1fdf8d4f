"""avsb: the command line for A vs B's integrations, starting with Segment."""

__version__ = "0.1.0"
