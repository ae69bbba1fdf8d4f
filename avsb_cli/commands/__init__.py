"""The command modules: one per command group, each command a few lines over a
library call. cli.py builds each group when it is first named."""
