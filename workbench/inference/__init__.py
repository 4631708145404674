"""Model-level inference on token ids: answer rounds, generation, option scoring, semantic equivalence.

This is the floor the experiment runner, the probes' steering and the bias measures stand on; it
knows models and the hook layer, never the run folder.
"""
