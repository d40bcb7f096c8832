"""Tests for workshop.data.protein_dataset on PDB and mmCIF fixtures of ideal backbones."""

import gzip
import os

from absl.testing import absltest
import gemmi
import numpy as np

from workshop.data import protein_dataset
from workshop.data.idx import DatasetFormatError

IDEAL = {term: value for term, (value, _) in protein_dataset.IDEAL_BACKBONE.items()}


def _place(a, b, c, length, angle, torsion):
    """The atom d with |cd| = length, angle bcd and torsion abcd in degrees (NeRF)."""
    angle, torsion = np.radians(angle), np.radians(torsion)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    local = [-length * np.cos(angle), length * np.sin(angle) * np.cos(torsion), length * np.sin(angle) * np.sin(torsion)]
    return c + local[0] * bc + local[1] * np.cross(n, bc) + local[2] * n


def ideal_backbone(num_residues, phi=-57.0, psi=-47.0):
    """float64 [L, 4, 3] N, CA, C, O of an alpha helix with Engh & Huber geometry."""
    n = np.zeros(3)
    ca = np.array([IDEAL["N-CA"], 0.0, 0.0])
    angle = np.radians(180 - IDEAL["N-CA-C"])
    c = ca + IDEAL["CA-C"] * np.array([np.cos(angle), np.sin(angle), 0.0])
    residues = []
    for _ in range(num_residues):
        o = _place(n, ca, c, IDEAL["C-O"], IDEAL["CA-C-O"], psi + 180)
        residues.append([n, ca, c, o])
        n_next = _place(n, ca, c, IDEAL["C-N"], IDEAL["CA-C-N"], psi)
        ca_next = _place(ca, c, n_next, IDEAL["N-CA"], IDEAL["C-N-CA"], 180.0)
        c = _place(c, n_next, ca_next, IDEAL["CA-C"], IDEAL["N-CA-C"], phi)
        n, ca = n_next, ca_next
    return np.array(residues)


def _atom_line(serial, name, resname, chain, number, icode, xyz, element, record="ATOM", altloc=" ", occupancy=1.0):
    name_field = f" {name:<3s}" if len(name) < 4 else name
    return (
        f"{record:<6s}{serial:5d} {name_field}{altloc}{resname:>3s} {chain}{number:4d}{icode}   "
        f"{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}{occupancy:6.2f}{20.0:6.2f}          {element:>2s}"
    )


def write_pdb(path, shift=(10.0, -5.0, 3.0)):
    """Chain A: MET50 ALA51 (no O) GLY52 MSE52A (HETATM) LYS53 (altloc CA), a water and
    a sulfate; chain B: three alanines. Returns the backbones written."""
    a = ideal_backbone(5) + shift
    b = ideal_backbone(3) - shift
    residues = [("MET", 50, " "), ("ALA", 51, " "), ("GLY", 52, " "), ("MSE", 52, "A"), ("LYS", 53, " ")]
    lines, serial = ["HEADER    TEST FIXTURE", "CRYST1  100.000  100.000  100.000  90.00  90.00  90.00 P 1           1"], 1
    for i, (resname, number, icode) in enumerate(residues):
        record = "HETATM" if resname == "MSE" else "ATOM"
        for j, atom in enumerate(("N", "CA", "C", "O")):
            if (i, atom) == (1, "O"):
                continue  # The missing atom.
            if (i, atom) == (4, "CA"):
                lines.append(_atom_line(serial, atom, resname, "A", number, icode, a[i, j], "C", altloc="A", occupancy=0.6))
                lines.append(_atom_line(serial + 1, atom, resname, "A", number, icode, a[i, j] + 1.5, "C", altloc="B", occupancy=0.4))
                serial += 2
                continue
            lines.append(_atom_line(serial, atom, resname, "A", number, icode, a[i, j], atom[0], record=record))
            serial += 1
        if i == 0:
            lines.append(_atom_line(serial, "H", resname, "A", number, icode, a[i, 0] + 1.0, "H"))
            serial += 1
    lines.append(f"TER   {serial:5d}      LYS A  53")
    for i in range(3):
        for j, atom in enumerate(("N", "CA", "C", "O")):
            lines.append(_atom_line(serial, atom, "ALA", "B", i + 1, " ", b[i, j], atom[0]))
            serial += 1
    lines.append(_atom_line(serial, "S", "SO4", "A", 201, " ", (0.0, 0.0, 0.0), "S", record="HETATM"))
    lines.append(_atom_line(serial + 1, "O", "HOH", "A", 301, " ", (1.0, 1.0, 1.0), "O", record="HETATM"))
    lines.append("END")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return a, b


class ReadTest(absltest.TestCase):

    def _check_chain_a(self, chain, a):
        self.assertEqual(chain["sequence"], "MAGMK")
        np.testing.assert_array_equal(chain["residue_number"], [50, 51, 52, 52, 53])
        self.assertEqual(chain["insertion_code"], "   A ")
        self.assertFalse(chain["atom_mask"][1, 3])
        self.assertEqual(chain["atom_mask"].sum(), 19)
        np.testing.assert_allclose(chain["coords"][chain["atom_mask"]], a[chain["atom_mask"]], atol=1e-3)  # Altloc A kept.

    def test_pdb_mmcif_and_gzip_read_the_same(self):
        folder = self.create_tempdir().full_path
        pdb = os.path.join(folder, "fixture.pdb")
        a, b = write_pdb(pdb)
        structure = gemmi.read_structure(pdb)
        structure.setup_entities()
        structure.make_mmcif_document().write_file(os.path.join(folder, "fixture.cif"))
        with open(pdb, "rb") as f, gzip.open(os.path.join(folder, "fixture.pdb.gz"), "wb") as g:
            g.write(f.read())
        for name in ("fixture.pdb", "fixture.cif", "fixture.pdb.gz"):
            chains = protein_dataset.read_backbone_chains(os.path.join(folder, name))
            self.assertEqual([c["chain"] for c in chains], ["A", "B"], name)
            self._check_chain_a(chains[0], a)
            np.testing.assert_allclose(chains[1]["coords"], b, atol=1e-3)
        only_b = protein_dataset.read_backbone_chains(pdb, chains=("B",))
        self.assertEqual([c["sequence"] for c in only_b], ["AAA"])

    def test_bad_files_name_path_and_format(self):
        folder = self.create_tempdir().full_path
        path = os.path.join(folder, "water.pdb")
        with open(path, "w") as f:
            f.write(_atom_line(1, "O", "HOH", "A", 1, " ", (0, 0, 0), "O", record="HETATM") + "\nEND\n")
        with self.assertRaisesRegex(DatasetFormatError, r"water.pdb: expected a PDB or mmCIF file .*no amino-acid residue"):
            protein_dataset.read_backbone_chains(path)
        broken = os.path.join(folder, "broken.cif")
        with open(broken, "w") as f:
            f.write("data_x\nloop_\n_atom_site.id\n_atom_site.Cartn_x\n1 'unterminated\n")
        with self.assertRaisesRegex(DatasetFormatError, r"broken.cif: expected a PDB or mmCIF file"):
            protein_dataset.read_backbone_chains(broken)
        truncated = os.path.join(folder, "truncated.pdb")
        write_pdb(truncated)
        with open(truncated) as f:
            text = f.read()
        with open(truncated, "w") as f:
            f.write(text[: text.index("ALA B   2") + 20])  # Cut inside a coordinate field.
        with self.assertRaisesRegex(DatasetFormatError, r"truncated.pdb: expected a PDB or mmCIF file .*too short"):
            protein_dataset.read_backbone_chains(truncated)
        with self.assertRaisesRegex(FileNotFoundError, r"structure file not found: .*nope.pdb"):
            protein_dataset.read_backbone_chains(os.path.join(folder, "nope.pdb"))


class GeometryTest(absltest.TestCase):

    def test_ideal_backbone_scores_near_zero_and_noise_scores_high(self):
        coords = ideal_backbone(20)
        scores = protein_dataset.score_backbone(coords)
        for term in ("n-ca", "ca-c", "c-o", "c-n"):
            self.assertLess(scores[f"{term}_rmsd"], 1e-6)
        for term in ("n-ca-c", "ca-c-n", "c-n-ca", "ca-c-o"):
            self.assertLess(scores[f"{term}_rmsd"], 1e-4)
        self.assertAlmostEqual(scores["ca-ca_rmsd"], 0.0, delta=0.02)  # Trans peptides: 3.80 A.
        self.assertEqual(scores["violation_fraction"], 0.0)
        noisy = coords + np.random.default_rng(0).normal(0, 0.3, coords.shape)
        noisy_scores = protein_dataset.score_backbone(noisy)
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
        self.assertLess(protein_dataset.score_backbone(coords, mask)["c-n_rmsd"], 1e-6)


class DatasetTest(absltest.TestCase):

    def test_folder_centring_constraints_and_padding(self):
        folder = self.create_tempdir().full_path
        write_pdb(os.path.join(folder, "one.pdb"))
        with open(os.path.join(folder, "bad.cif"), "w") as f:
            f.write("data_x\nloop_\n_atom_site.id\n")
        with self.assertRaisesRegex(DatasetFormatError, "bad.cif"):
            protein_dataset.ProteinDataset(folder)
        dataset = protein_dataset.ProteinDataset(folder, with_constraints=True, skip_bad_files=True)
        self.assertEqual([str(p) for p, _ in dataset.skipped], [os.path.join(folder, "bad.cif")])
        self.assertLen(dataset, 2)
        chain_a = dataset[0]
        np.testing.assert_allclose(chain_a["coords"][chain_a["atom_mask"][:, 1], 1].mean(0), 0.0, atol=1e-5)
        # Residues 0-1-2-3-4 are bonded in turn: four 3.80 A CA-CA targets, none after the last.
        np.testing.assert_array_equal(chain_a["peptide_mask"], [True, True, True, True, False])
        np.testing.assert_allclose(chain_a["ca_ca_distance"][:4], 3.80, atol=0.02)
        arrays = dataset.as_arrays(max_length=4)
        self.assertEqual(arrays["coords"].shape, (2, 4, 4, 3))
        np.testing.assert_array_equal(arrays["residue_mask"], [[1, 1, 1, 1], [1, 1, 1, 0]])
        np.testing.assert_array_equal(arrays["peptide_mask"][0], [1, 1, 1, 0])
        np.testing.assert_array_equal(arrays["aatype"][1], [0, 0, 0, 20])
        self.assertEqual(len(protein_dataset.ProteinDataset(folder, chains=("B",), skip_bad_files=True)), 1)


_PYMOL_DIR = "/usr/share/pymol/data/demo"


@absltest.skipUnless(os.path.isdir(_PYMOL_DIR), f"{_PYMOL_DIR} is missing: apt-get install pymol-data")
class RealPymolTest(absltest.TestCase):

    def test_real_structures_have_near_ideal_geometry(self):
        dataset = protein_dataset.ProteinDataset(os.path.join(_PYMOL_DIR, "1tii.pdb"))
        self.assertGreaterEqual(len(dataset), 2)
        chain = dataset[0]
        scores = protein_dataset.score_backbone(chain["coords"], chain["atom_mask"])
        self.assertLess(scores["n-ca_rmsd"], 0.1)
        self.assertLess(scores["ca-ca_rmsd"], 0.2)


if __name__ == "__main__":
    absltest.main()
