"""Intrinsic bias measures: CrowS-Pairs (sentence likelihoods) and SEAT/WEAT (pooled hidden states)."""
