"""Ideal protein geometry for tests: NeRF-built backbones, random rotations and CA-trace PDB files.

Backbones follow Engh & Huber (1991) bond lengths and angles
(`protein_dataset.IDEAL_BACKBONE`), placed atom by atom with the natural
extension reference frame (Parsons et al. 2005, "Practical conversion from
torsion space to Cartesian space for in silico protein synthesis", J. Comput.
Chem. 26:1063).
"""

from __future__ import annotations

import numpy as np

from workshop.data.protein_dataset import IDEAL_BACKBONE, write_ca_traces

__all__ = ["ideal_backbone", "place_atom", "random_rotation", "write_ca_trace_pdb"]

_IDEAL = {term: value for term, (value, _) in IDEAL_BACKBONE.items()}


def place_atom(a, b, c, length, angle, torsion):
    """The atom d with |cd| = length, angle bcd and torsion abcd in degrees (NeRF)."""
    angle, torsion = np.radians(angle), np.radians(torsion)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    local = [-length * np.cos(angle), length * np.sin(angle) * np.cos(torsion), length * np.sin(angle) * np.sin(torsion)]
    return c + local[0] * bc + local[1] * np.cross(n, bc) + local[2] * n


def ideal_backbone(num_residues, phi=-57.0, psi=-47.0, omega=180.0):
    """float64 `[L, 4, 3]` N, CA, C, O of a chain with torsions phi, psi (default an alpha helix).

    `omega`: the peptide torsion CA(i)-C(i)-N(i+1)-CA(i+1), 180 (trans) or 0
    (cis), one value or one per bond `[L - 1]`.
    """
    omegas = np.broadcast_to(np.asarray(omega, np.float64), (max(num_residues - 1, 0),))
    n = np.zeros(3)
    ca = np.array([_IDEAL["N-CA"], 0.0, 0.0])
    angle = np.radians(180 - _IDEAL["N-CA-C"])
    c = ca + _IDEAL["CA-C"] * np.array([np.cos(angle), np.sin(angle), 0.0])
    residues = []
    for i in range(num_residues):
        o = place_atom(n, ca, c, _IDEAL["C-O"], _IDEAL["CA-C-O"], psi + 180)
        residues.append([n, ca, c, o])
        n_next = place_atom(n, ca, c, _IDEAL["C-N"], _IDEAL["CA-C-N"], psi)
        ca_next = place_atom(ca, c, n_next, _IDEAL["N-CA"], _IDEAL["C-N-CA"], omegas[i] if i < len(omegas) else 180.0)
        c = place_atom(c, n_next, ca_next, _IDEAL["CA-C"], _IDEAL["N-CA-C"], phi)
        n, ca = n_next, ca_next
    return np.array(residues)


def random_rotation(seed):
    """A random proper rotation `[3, 3]` (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def write_ca_trace_pdb(path, ca, chain="A"):
    """Writes a PDB file with one chain of alanine CA atoms (a CA trace) at `ca` `[L, 3]`."""
    write_ca_traces(path, np.asarray(ca)[None], chain=chain)
