"""Evaluation: likelihoods in nats and bits/dim, and sample quality (FID, KID, PRDC).

The public API, re-exported from the modules of this package:

    workshop.eval.log_likelihood(model, "fashion_mnist")   # nats, bits/dim, kind of estimate
    workshop.eval.anomaly_scores(model, batches)           # per-example -log p(x), [N]
    workshop.eval.sample_quality(model, num_samples=10000) # FID / KID / PRDC vs the test set
"""

from workshop.eval.feature_net import FeatureNetworkMissingError as FeatureNetworkMissingError
from workshop.eval.feature_net import load_feature_net as load_feature_net
from workshop.eval.frechet import frechet_distance as frechet_distance
from workshop.eval.frechet import gaussian_statistics as gaussian_statistics
from workshop.eval.inception import load_inception as load_inception
from workshop.eval.kid import kernel_inception_distance as kernel_inception_distance
from workshop.eval.likelihood import anomaly_scores as anomaly_scores
from workshop.eval.likelihood import bits_per_dim as bits_per_dim
from workshop.eval.likelihood import evaluate_likelihood as evaluate_likelihood
from workshop.eval.likelihood import likelihood_estimate as likelihood_estimate
from workshop.eval.likelihood import log_likelihood as log_likelihood
from workshop.eval.prdc import precision_recall_density_coverage as precision_recall_density_coverage
from workshop.eval.quality import reference_features as reference_features
from workshop.eval.quality import sample_quality as sample_quality

__all__ = [
    "FeatureNetworkMissingError",
    "anomaly_scores",
    "bits_per_dim",
    "evaluate_likelihood",
    "frechet_distance",
    "gaussian_statistics",
    "kernel_inception_distance",
    "likelihood_estimate",
    "load_feature_net",
    "load_inception",
    "log_likelihood",
    "precision_recall_density_coverage",
    "reference_features",
    "sample_quality",
]
