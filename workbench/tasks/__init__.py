"""Tasks: benchmark files -> :class:`~workbench.tasks.items.Item` objects (no model knowledge)."""
