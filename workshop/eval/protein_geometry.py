"""Scores of protein backbones and CA traces (a model's samples) against the geometry of real chains.

`score_backbone` compares a backbone's bonds, angles and consecutive CA-CA
distances (`workshop.data.protein_dataset.backbone_geometry`) with the ideal
values of Engh & Huber (1991, Acta Cryst. A47:392; `IDEAL_BACKBONE`).
`score_ca_trace` scores a batch of CA traces (the samples of CA-only models):
consecutive CA-CA distances against 3.80 A, CA-CA-CA virtual bond angles
against the range real proteins occupy, and clashes between
non-neighbouring CAs.
"""

from __future__ import annotations

import numpy as np

from workshop.data.protein_dataset import IDEAL_BACKBONE, angles, backbone_geometry, distances

__all__ = ["CA_ANGLE_RANGE", "CA_CLASH_DISTANCE", "score_backbone", "score_ca_trace"]

# CA-CA-CA virtual bond angles of real chains lie in about [80, 150] degrees
# (helices near 91, strands near 120); 99.5% of the 1300 angles of the pymol-data
# structures fall inside.
CA_ANGLE_RANGE = (80.0, 150.0)
# Non-neighbouring CAs (|i - j| >= 3) closer than this clash: as close as bonded
# neighbours. In the pymol-data structures none comes closer than 4.0 A.
CA_CLASH_DISTANCE = 3.8
_CLASH_SEPARATION = 3


def score_backbone(coords: np.ndarray, atom_mask: np.ndarray | None = None, tolerance: float = 3.0) -> dict[str, float]:
    """Scores a (generated) backbone against ideal geometry.

    Args:
      coords: float `[L, 4, 3]` (N, CA, C, O), e.g. a model's sample.
      atom_mask: bool `[L, 4]` (default all present).
      tolerance: a term is violated beyond this many standard deviations.

    Returns:
      `"<term>_rmsd"`: root mean square deviation from the ideal value per term;
      `"mean_z2"`: mean squared z-score over all measured terms (0 is ideal,
      about 1 for good crystal structures); `"violation_fraction"`: share of
      terms beyond `tolerance`; `"ca_ca_rmsd"` is the consecutive CA-CA term.
    """
    scores, z_all = {}, []
    for term, (values, mask) in backbone_geometry(coords, atom_mask).items():
        ideal, sigma = IDEAL_BACKBONE[term]
        deviation = values[mask] - ideal
        scores[f"{term.lower()}_rmsd"] = float(np.sqrt(np.mean(deviation**2))) if deviation.size else float("nan")
        z_all.append(deviation / sigma)
    z = np.concatenate(z_all)
    scores["mean_z2"] = float(np.mean(z**2)) if z.size else float("nan")
    scores["violation_fraction"] = float(np.mean(np.abs(z) > tolerance)) if z.size else float("nan")
    return scores


def score_ca_trace(ca: np.ndarray) -> dict[str, float]:
    """Scores CA traces (e.g. a model's samples) against the geometry of real chains.

    Args:
      ca: float `[N, L, 3]` in Angstrom, N traces of L consecutive residues.

    Returns:
      `"ca_ca_rmsd"`: root mean square deviation of the N (L - 1) consecutive
      CA-CA distances from 3.80 A; `"ca_ca_violation_fraction"`: their share
      beyond 3 standard deviations (0.15 A) of it; `"ca_angle_outside_fraction"`:
      share of CA-CA-CA angles outside `CA_ANGLE_RANGE`; `"clash_fraction"`:
      share of non-neighbouring pairs (|i - j| >= 3) closer than
      `CA_CLASH_DISTANCE`; `"traces_with_clash"`: share of traces with one;
      `"radius_of_gyration"`: mean over traces, A; `"ca_ca_mean"`, `"ca_angle_mean"`.
    """
    ca = np.asarray(ca, np.float64)
    if ca.ndim != 3 or ca.shape[-1] != 3 or ca.shape[1] < 3:
        raise ValueError(f"score_ca_trace: expected CA traces [N, L, 3] with L >= 3, got shape {ca.shape}")
    ideal, sigma = IDEAL_BACKBONE["CA-CA"]
    bonds = distances(ca[:, :-1], ca[:, 1:])
    bends = angles(ca[:, :-2], ca[:, 1:-1], ca[:, 2:])
    i, j = np.triu_indices(ca.shape[1], _CLASH_SEPARATION)
    clashes = distances(ca[:, i], ca[:, j]) < CA_CLASH_DISTANCE
    centred = ca - ca.mean(1, keepdims=True)
    return {
        "ca_ca_rmsd": float(np.sqrt(np.mean((bonds - ideal) ** 2))),
        "ca_ca_violation_fraction": float(np.mean(np.abs(bonds - ideal) > 3 * sigma)),
        "ca_ca_mean": float(bonds.mean()),
        "ca_angle_outside_fraction": float(np.mean((bends < CA_ANGLE_RANGE[0]) | (bends > CA_ANGLE_RANGE[1]))),
        "ca_angle_mean": float(bends.mean()),
        "clash_fraction": float(clashes.mean()) if clashes.size else 0.0,
        "traces_with_clash": float(clashes.any(1).mean()) if clashes.size else 0.0,
        "radius_of_gyration": float(np.sqrt((centred**2).sum(-1).mean(1)).mean()),
    }
