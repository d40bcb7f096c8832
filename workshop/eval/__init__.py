"""Evaluation: likelihoods in nats and bits/dim (sample-quality metrics join later)."""
