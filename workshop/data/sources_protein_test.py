"""Tests of `load_split` for protein windows: cropping, pose, scale, flattening and held-out chains."""

import os

import numpy as np
import pydantic
from absl.testing import absltest

from workshop.core.configuration import DataConfiguration
from workshop.data import protein_dataset, sources
from workshop.eval import protein_geometry
from workshop.data.pipeline import BatchPipeline
from workshop.data.protein_fixtures import ideal_backbone, write_ca_trace_pdb


def _with(data: DataConfiguration, **protein) -> DataConfiguration:
    """`data` with some fields of `data.protein` changed."""
    return data.model_copy(update={"protein": data.protein.model_copy(update=protein)})


class ProteinWindowsTest(absltest.TestCase):

    def setUp(self):
        super().setUp()
        self.root = self.create_tempdir().full_path
        self.helices = [ideal_backbone(n)[:, 1] + 7.0 * i for i, n in enumerate((10, 12, 9))]
        for i, ca in enumerate(self.helices):  # Files sort as chain0, chain1, chain2: chain2 is held out.
            write_ca_trace_pdb(os.path.join(self.root, f"chain{i}.pdb"), ca)
        self.data = DataConfiguration(dataset="protein", data_dir=self.root, test_fraction=0.3,
                                      protein=dict(sequence_length=6, window_stride=2))

    def test_windows_of_the_training_and_held_out_chains(self):
        train, test = sources.load_split(self.data, train=True), sources.load_split(self.data, train=False)
        # Starts 0, 2, 4 in chain 0 (10 residues), 0, 2, 4, 6 in chain 1 (12), 0, 2 in chain 2 (9).
        self.assertEqual(train["x"].shape, (7, 6, 3))
        self.assertEqual(test["x"].shape, (2, 6, 3))
        self.assertTrue(train["mask"].all())
        self.assertEqual(train["x"].dtype, np.float32)
        np.testing.assert_allclose(train["x"].mean(1), 0.0, atol=1e-4)  # Each window centred.
        window = self.helices[1][2:8]
        np.testing.assert_allclose(train["x"][4], window - window.mean(0), atol=1e-3)
        held_out = self.helices[2][2:8]
        np.testing.assert_allclose(test["x"][1], held_out - held_out.mean(0), atol=1e-3)

    def test_pose_scale_and_flattening(self):
        data = _with(self.data, frame="principal_axes", coordinate_scale=10.0).model_copy(update={"flatten": True})
        train = sources.load_split(data, train=True)
        self.assertEqual(train["x"].shape, (7, 18))
        self.assertEqual(train["mask"].shape, (7, 6))
        traces = train["x"].reshape(7, 6, 3) * 10.0
        windows = protein_dataset.ca_windows(
            [protein_dataset.ProteinDataset(os.path.join(self.root, f"chain{i}.pdb"))[0] for i in (0, 1)], 6, 2)
        np.testing.assert_allclose(traces, protein_dataset.principal_axes_frame(windows["ca"]), atol=1e-3)
        # The pose keeps the geometry: consecutive CAs of the ideal helix stay 3.80 A apart.
        self.assertLess(protein_geometry.score_ca_trace(traces)["ca_ca_rmsd"], 0.02)
        batch = next(iter(BatchPipeline(train, batch_size=4, prefetch=0)))
        self.assertEqual(batch["x"].shape, (4, 18))
        self.assertEqual(batch["aatype"].dtype, np.int32)

    def test_first_residues_frame_leaves_out_its_fixed_zeros(self):
        data = _with(self.data, frame="first_residues", coordinate_scale=10.0).model_copy(update={"flatten": True})
        train = sources.load_split(data, train=True)
        self.assertEqual(train["x"].shape, (7, 12))  # 3 * 6 - 6.
        window = self.helices[1][2:8]
        expected = protein_dataset.first_residues_frame(window[None]) / 10.0
        np.testing.assert_allclose(protein_dataset.restore_fixed_coordinates(train["x"][4:5], 6), expected, atol=1e-4)
        with self.assertRaisesRegex(pydantic.ValidationError, "needs whole windows"):
            DataConfiguration(dataset="protein", data_dir=self.root, protein=dict(frame="first_residues"))

    def test_noisy_copies_of_the_training_windows_only(self):
        clean_train, clean_test = sources.load_split(self.data, train=True), sources.load_split(self.data, train=False)
        data = _with(self.data, coordinate_noise=0.5, noise_copies=40)
        train, test = sources.load_split(data, train=True), sources.load_split(data, train=False)
        self.assertEqual(train["x"].shape, (7 * 40, 6, 3))
        np.testing.assert_array_equal(test["x"], clean_test["x"])
        noise = train["x"] - np.repeat(clean_train["x"], 40, axis=0)
        self.assertAlmostEqual(float(noise.std()), 0.5, delta=0.02)  # 5040 draws.
        self.assertAlmostEqual(float(noise.mean()), 0.0, delta=0.03)
        np.testing.assert_array_equal(sources.load_split(data, train=True)["x"], train["x"])  # One fixed draw.
        reseeded = sources.load_split(data.model_copy(update={"shuffle_seed": 1}), train=True)["x"]
        self.assertFalse(np.allclose(reseeded, train["x"]))
        with self.assertRaisesRegex(pydantic.ValidationError, "data.protein.coordinate_noise=0.1 is set, but "
                                                              "data.dataset 'mnist' is an image dataset"):
            DataConfiguration(dataset="mnist", protein=dict(coordinate_noise=0.1))

    def test_whole_chains_in_the_principal_axes_frame_keep_their_padding(self):
        data = _with(self.data, window_stride=None, sequence_length=12, frame="principal_axes")
        train = sources.load_split(data, train=True)
        self.assertEqual(train["x"].shape, (2, 12, 3))
        np.testing.assert_array_equal(train["mask"].sum(1), [10, 12])
        np.testing.assert_array_equal(train["x"][0, 10:], 0.0)
        read = protein_dataset.ProteinDataset(os.path.join(self.root, "chain0.pdb"))[0]["coords"][:, 1]
        np.testing.assert_allclose(train["x"][0, :10], protein_dataset.principal_axes_frame(read[None])[0], atol=1e-4)

    def test_errors_name_the_field(self):
        with self.assertRaisesRegex(ValueError, r"no run of data.protein.sequence_length=11 consecutive residues"):
            sources.load_split(_with(self.data, sequence_length=11), train=False)
        with self.assertRaisesRegex(pydantic.ValidationError, r"data.window_stride=2 \(now data.protein.window_stride\) "
                                                              "does not apply to data.dataset 'mnist'"):
            DataConfiguration(dataset="mnist", window_stride=2)
        with self.assertRaisesRegex(pydantic.ValidationError, "set data.protein.sequence_length"):
            DataConfiguration(dataset="protein", data_dir=self.root, protein=dict(window_stride=2))

    def test_bad_files_are_skipped_and_counted(self):
        with open(os.path.join(self.root, "chain1b_truncated.cif"), "w") as f:
            f.write("data_x\nloop_\n_atom_site.id\n_atom_site.Cartn_x\n1 'unterminated\n")
        with self.assertRaisesRegex(Exception, r"chain1b_truncated.cif: expected a PDB or mmCIF file"):
            sources.load_split(self.data, train=True)
        data = self.data.model_copy(update={"skip_bad_files": True})
        with self.assertLogs("workshop.data.sources", level="WARNING") as logs:
            train = sources.load_split(data, train=True)
        self.assertIn("skipped 1 bad file(s), e.g.", logs.output[0])
        self.assertIn("chain1b_truncated.cif", logs.output[0])
        self.assertEqual(len(train["x"]), 7)


_PYMOL_DATA = "/usr/share/pymol/data"


@absltest.skipUnless(os.path.isdir(os.path.join(_PYMOL_DATA, "demo")), f"{_PYMOL_DATA} is missing: apt-get install pymol-data")
class RealPymolWindowsTest(absltest.TestCase):

    def test_the_data_of_the_protein_backbone_config(self):
        data = DataConfiguration(dataset="protein", data_dir=_PYMOL_DATA, flatten=True, test_fraction=0.15,
                                 skip_bad_files=True,
                                 protein=dict(sequence_length=16, window_stride=1, frame="principal_axes",
                                              coordinate_scale=10.0, coordinate_noise=0.5, noise_copies=16))
        train, test = sources.load_split(data, train=True), sources.load_split(data, train=False)
        # 688 windows of 9 chains (1TII, IL-2, the peptide is too short) x 16 noisy copies; 1HPV A and B held out.
        self.assertEqual(train["x"].shape, (688 * 16, 48))
        self.assertEqual(test["x"].shape, (2 * (99 - 15), 48))
        clean = sources.load_split(_with(data, coordinate_noise=0.0), train=True)
        for split in (clean, test):
            scores = protein_geometry.score_ca_trace(split["x"].reshape(-1, 16, 3) * data.protein.coordinate_scale)
            self.assertLess(scores["ca_ca_rmsd"], 0.15)  # Real chains: 3.80 A apart (a few cis peptides).
            self.assertEqual(scores["traces_with_clash"], 0.0)


if __name__ == "__main__":
    absltest.main()
