"""The command line: argument parsing and printing only; every stage lives in :mod:`workbench.pipeline`."""
