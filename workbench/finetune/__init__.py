"""Fine-tuning that keeps debiasing: CDA debiasing, downstream tasks, plain / ProSocialTuning /
PAC-tuning training of causal LMs and BERT/RoBERTa encoders."""
