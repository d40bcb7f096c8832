"""Tests of workshop.eval.protein_backbone: superposition RMSD, baselines and the comparison table."""

import os

import numpy as np
from absl.testing import absltest

from workshop.core.configuration import DataConfiguration
from workshop.data.protein_fixtures import ideal_backbone, random_rotation, write_ca_trace_pdb
from workshop.eval import protein_backbone


class NearestRmsdTest(absltest.TestCase):

    def test_against_brute_force_superposition(self):
        rng = np.random.default_rng(0)
        reference = np.stack([ideal_backbone(8, phi, psi)[:, 1] for phi, psi in ((-57, -47), (-120, 130))])
        moved = np.einsum("ij,lj->li", random_rotation(1), reference[1]) + 4.0
        noisy = reference[0] + rng.normal(0, 0.3, reference[0].shape)
        mirror = reference[0] * np.array([1.0, 1.0, -1.0])
        rmsd = protein_backbone.nearest_rmsd(np.stack([moved, noisy, mirror]), reference, chunk=2)
        self.assertAlmostEqual(rmsd[0], 0.0, places=4)  # A rotated, shifted copy matches exactly.

        q, r = np.linalg.qr(rng.normal(size=(20000, 3, 3)))
        q *= np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
        rotations = q * np.sign(np.linalg.det(q))[:, None, None]  # 20000 random proper rotations.

        def brute_force(trace):  # The best of the random rotations about the centroids.
            rotated = np.einsum("kij,lj->kli", rotations, trace - trace.mean(0))
            centred = reference - reference.mean(1, keepdims=True)
            return np.sqrt(((rotated[:, None] - centred[None]) ** 2).sum(-1).mean(-1)).min()

        # Kabsch is optimal: never worse than any rotation tried, and close to the best of many.
        for value, trace in zip(rmsd[1:], (noisy, mirror)):
            found = brute_force(trace)
            self.assertLessEqual(value, found + 1e-6)
            self.assertGreater(value, found - 0.3)
        self.assertGreater(rmsd[2], 0.5)  # The helix's mirror image is left-handed: no rotation matches it.


class CompareTest(absltest.TestCase):

    def test_real_windows_beat_the_gaussian_baselines(self):
        root = self.create_tempdir().full_path
        for i, (phi, psi) in enumerate(((-57, -47), (-60, -45), (-120, 130), (-65, -40))):
            write_ca_trace_pdb(os.path.join(root, f"chain{i}.pdb"), ideal_backbone(14, phi, psi)[:, 1])
        data = DataConfiguration(dataset="protein", data_dir=root, flatten=True, test_fraction=0.25,
                                 protein=dict(sequence_length=8, window_stride=1, frame="principal_axes",
                                              coordinate_scale=10.0))
        from workshop.data import sources  # pylint: disable=g-import-not-at-top

        samples = sources.load_split(data, train=True)["x"][:5]  # "Samples" that copy training windows.
        result = protein_backbone.compare_traces(samples, data, seed=0)
        self.assertEqual(set(result), {"samples", "held_out", "train", "gaussian_matched_scale", "gaussian_fit"})
        self.assertEqual(result["samples"]["count"], 5)
        self.assertEqual(result["gaussian_fit"]["count"], 5)
        self.assertAlmostEqual(result["samples"]["nearest_train_rmsd"], 0.0, places=3)
        for name in ("samples", "held_out", "train"):
            self.assertLess(result[name]["ca_ca_rmsd"], 0.02)
        for name in ("gaussian_matched_scale", "gaussian_fit"):
            self.assertGreater(result[name]["ca_ca_rmsd"], 0.1)
        self.assertIn("gaussian_fit", protein_backbone.format_table(result))
        with self.assertRaisesRegex(ValueError, r"expected CA traces \[N, 24\]"):
            protein_backbone.compare_traces(np.zeros((5, 20)), data)
        anchored = data.model_copy(update={"protein": data.protein.model_copy(update={"frame": "first_residues"})})
        result = protein_backbone.compare_traces(sources.load_split(anchored, train=True)["x"][:5], anchored)
        self.assertAlmostEqual(result["samples"]["nearest_train_rmsd"], 0.0, places=3)
        self.assertLess(result["samples"]["ca_ca_rmsd"], 0.02)
        with self.assertRaisesRegex(ValueError, "window_stride"):
            protein_backbone.compare_traces(
                samples, data.model_copy(update={"protein": data.protein.model_copy(update={"window_stride": None})}))


if __name__ == "__main__":
    absltest.main()
