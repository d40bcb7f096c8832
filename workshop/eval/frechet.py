"""Frechet distance between Gaussians fitted to features: the FID formula.

Heusel, Ramsauer, Unterthiner, Nessler & Hochreiter (2017), "GANs trained by
a two time-scale update rule converge to a local Nash equilibrium",
arXiv:1706.08500: with feature means mu_1, mu_2 and covariances S_1, S_2,

    d^2 = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}),

the squared 2-Wasserstein distance between N(mu_1, S_1) and N(mu_2, S_2)
(Dowson & Landau 1982).

The matrix square root. tr (S_1 S_2)^{1/2} is computed as sum_i sqrt(l_i)
over the eigenvalues l_i of the SYMMETRIC positive semi-definite matrix
A S_2 A, A = S_1^{1/2} (both by `numpy.linalg.eigh`, in float64), which has
the same eigenvalues as S_1 S_2. The usual route, `scipy.linalg.sqrtm` of the
non-symmetric S_1 S_2, runs a Schur decomposition that can return complex
parts and a wrong trace when the covariances are singular (fewer samples than
feature dimensions), which is why pytorch-fid adds eps * I and drops the
imaginary part; the symmetric route needs neither fix: tiny negative
eigenvalues from round-off are clipped to zero. float64 because FID is a
difference of large numbers: in float32 the trace terms lose the digits that
make up a small distance. The statistics are accumulated in float64 too.
"""

from __future__ import annotations

import numpy as np

__all__ = ["frechet_distance", "gaussian_statistics"]


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of a feature set, in float64.

    Args:
      features: `[N, D]` array (N >= 2).

    Returns:
      `(mu [D], sigma [D, D])`.
    """
    f = np.asarray(features, np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {list(f.shape)}")
    if f.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {f.shape[0]}")
    mu = f.mean(axis=0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric PSD matrix (negative round-off clipped)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Frechet (2-Wasserstein) distance between two Gaussians.

    Args:
      mu1, mu2: `[D]` means.
      sigma1, sigma2: `[D, D]` symmetric positive semi-definite covariances.

    Returns:
      `|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})` as a
      Python float (>= 0 up to round-off, which is clipped).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[-1] if mu1.ndim == 1 else None
    for name, m in (("mu1", mu1), ("mu2", mu2)):
        if m.ndim != 1 or m.shape[0] != d:
            raise ValueError(f"{name} must be a [D] vector with D = {d}, got shape {list(m.shape)}")
    for name, s in (("sigma1", sigma1), ("sigma2", sigma2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must be [{d}, {d}] to match the means, got shape {list(s.shape)}")
    root1 = _psd_sqrt(sigma1)
    inner = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    trace_sqrt = float(np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None))))
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)
    return max(value, 0.0)
