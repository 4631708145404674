"""Head attribution for bias: per-head effects on a contrast-pair bias measure (activation
patching, attribution patching, mean ablation, Vig et al.'s mediation through attention weights,
direct logit attribution), checkpoint comparison and head selection."""
