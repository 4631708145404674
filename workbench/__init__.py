"""Moral self-correction workbench: models, hook layer, tasks, protocols, runner, command line."""

__version__ = "0.1.0"
