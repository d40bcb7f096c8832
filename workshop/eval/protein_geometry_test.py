"""Tests for workshop.eval.protein_geometry: ideal, noisy, broken and real backbones, CA traces of known shape."""

import os

import numpy as np
from absl.testing import absltest

from workshop.data import protein_dataset
from workshop.data.protein_fixtures import ideal_backbone
from workshop.eval import protein_geometry

_PYMOL_DIR = "/usr/share/pymol/data/demo"


class GeometryTest(absltest.TestCase):

    def test_ideal_backbone_scores_near_zero_and_noise_scores_high(self):
        coords = ideal_backbone(20)
        scores = protein_geometry.score_backbone(coords)
        for term in ("n-ca", "ca-c", "c-o", "c-n"):
            self.assertLess(scores[f"{term}_rmsd"], 1e-6)
        for term in ("n-ca-c", "ca-c-n", "c-n-ca", "ca-c-o"):
            self.assertLess(scores[f"{term}_rmsd"], 1e-4)
        self.assertAlmostEqual(scores["ca-ca_rmsd"], 0.0, delta=0.02)  # Trans peptides: 3.80 A.
        self.assertEqual(scores["violation_fraction"], 0.0)
        noisy = coords + np.random.default_rng(0).normal(0, 0.3, coords.shape)
        noisy_scores = protein_geometry.score_backbone(noisy)
        self.assertGreater(noisy_scores["mean_z2"], 50 * max(scores["mean_z2"], 0.01))
        self.assertGreater(noisy_scores["violation_fraction"], 0.3)

    def test_chain_break_and_missing_atoms_are_not_scored(self):
        coords = ideal_backbone(6)
        coords[3:] += 20.0  # A gap between residues 2 and 3.
        mask = np.ones((6, 4), bool)
        mask[0, 3] = False
        geometry = protein_dataset.backbone_geometry(coords, mask)
        np.testing.assert_array_equal(geometry["C-N"][1], [True, True, False, True, True])
        self.assertFalse(geometry["C-O"][1][0])
        self.assertLess(protein_geometry.score_backbone(coords, mask)["c-n_rmsd"], 1e-6)


class CaTraceScoreTest(absltest.TestCase):

    def test_ca_trace_scores(self):
        helix = ideal_backbone(16)[None, :, 1]
        scores = protein_geometry.score_ca_trace(helix)
        self.assertLess(scores["ca_ca_rmsd"], 0.02)
        self.assertEqual(scores["ca_ca_violation_fraction"], 0.0)
        self.assertAlmostEqual(scores["ca_angle_mean"], 91.0, delta=2.0)  # The alpha helix's CA angle.
        self.assertEqual(scores["ca_angle_outside_fraction"], 0.0)
        self.assertEqual(scores["traces_with_clash"], 0.0)
        line = np.zeros((1, 6, 3))
        line[0, :, 0] = 4.0 * np.arange(6)  # Straight: 4.0 A bonds, 180 degree angles.
        scores = protein_geometry.score_ca_trace(line)
        self.assertAlmostEqual(scores["ca_ca_rmsd"], 0.2, places=6)
        self.assertEqual(scores["ca_ca_violation_fraction"], 1.0)
        self.assertEqual(scores["ca_angle_outside_fraction"], 1.0)
        self.assertAlmostEqual(scores["radius_of_gyration"], 4.0 * np.sqrt(35 / 12), places=5)
        square = np.array([[[0, 0, 0], [3.8, 0, 0], [3.8, 3.8, 0], [0, 3.8, 0], [0, 0.5, 0]]])
        scores = protein_geometry.score_ca_trace(square)  # Residue 4 sits 0.5 A from residue 0.
        self.assertAlmostEqual(scores["ca_angle_outside_fraction"], 0.0)
        self.assertAlmostEqual(scores["clash_fraction"], 1 / 3)  # Pairs (0, 3), (0, 4), (1, 4).
        self.assertEqual(scores["traces_with_clash"], 1.0)
        with self.assertRaisesRegex(ValueError, r"\[N, L, 3\]"):
            protein_geometry.score_ca_trace(np.zeros((4, 3)))


@absltest.skipUnless(os.path.isdir(_PYMOL_DIR), f"{_PYMOL_DIR} is missing: apt-get install pymol-data")
class RealPymolTest(absltest.TestCase):

    def test_real_structures_have_near_ideal_geometry(self):
        dataset = protein_dataset.ProteinDataset(os.path.join(_PYMOL_DIR, "1tii.pdb"))
        self.assertGreaterEqual(len(dataset), 2)
        chain = dataset[0]
        scores = protein_geometry.score_backbone(chain["coords"], chain["atom_mask"])
        self.assertLess(scores["n-ca_rmsd"], 0.1)
        self.assertLess(scores["ca-ca_rmsd"], 0.2)


if __name__ == "__main__":
    absltest.main()
