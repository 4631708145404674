"""Head attribution for bias: per-head effects on a contrast-pair bias measure (activation
patching, attribution patching, mean ablation), checkpoint comparison and head selection."""
