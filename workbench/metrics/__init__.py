"""Behavioural metrics of self-correction runs: pure numpy functions with documented formulas."""
