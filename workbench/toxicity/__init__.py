"""Toxicity scorers for generated text: one protocol, several interchangeable implementations.

- :class:`~workbench.toxicity.profanity_check_scorer.ProfanityCheckScorer` (default, offline),
- :class:`~workbench.toxicity.perspective.PerspectiveScorer` (Google Perspective API, as the MSU
  papers used),
- :class:`~workbench.toxicity.lexicon.LexiconScorer` (word-list baseline, e.g. LDNOOBW).

Build one from configuration with :func:`~workbench.toxicity.scorer_config.build_toxicity_scorer`.
"""
