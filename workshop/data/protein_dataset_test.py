"""Tests for workshop.data.protein_dataset on PDB and mmCIF fixtures of ideal backbones."""

import gzip
import os
import re

from absl.testing import absltest
import gemmi
import numpy as np

from workshop.data import protein_dataset
from workshop.data.idx import DatasetFormatError
from workshop.data.protein_fixtures import ideal_backbone, random_rotation


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

    def test_old_pdb_layout_with_record_ids_in_columns_73_to_80(self):
        folder = self.create_tempdir().full_path
        path = os.path.join(folder, "old.pdb")
        a, b = write_pdb(path)
        with open(path) as f:
            lines = f.read().splitlines()
        # Pre-1996 files end each line with the entry id and a line number, where the element now is.
        with open(path, "w") as f:
            f.write("\n".join(f"{line[:72]:<72s}1OLD{i:4d}" for i, line in enumerate(lines)) + "\n")
        with self.assertRaises(RuntimeError):
            gemmi.read_structure(path)
        chains = protein_dataset.read_backbone_chains(path)
        self._check_chain_a(chains[0], a)
        np.testing.assert_allclose(chains[1]["coords"], b, atol=1e-3)


def _chain(ca, present=None):
    """A read_backbone_chains-like dict holding only CA positions [L, 3]."""
    coords = np.zeros((len(ca), 4, 3), np.float32)
    coords[:, 1] = ca
    mask = np.zeros((len(ca), 4), bool)
    mask[:, 1] = True if present is None else present
    return {"coords": coords, "atom_mask": mask, "aatype": np.arange(len(ca), dtype=np.int32) % 20}


class CaTraceTest(absltest.TestCase):

    def test_windows_are_every_valid_run_of_consecutive_cas(self):
        ca = ideal_backbone(20)[:, 1]
        ca[12:] += 30.0  # A chain break between residues 11 and 12.
        present = np.ones(20, bool)
        present[4] = False  # A residue without CA.
        chains = [_chain(ca, present), _chain(ideal_backbone(3)[:, 1])]
        windows = protein_dataset.ca_windows(chains, length=4, stride=1)
        # Brute force: every start whose 4 residues have CAs and no break between them.
        expected = [s for s in range(17) if present[s:s + 4].all() and not (s < 12 <= s + 3)]
        self.assertEqual(windows["start"].tolist(), expected)  # 0, 5-8, 12-16; chain 1 is too short.
        np.testing.assert_array_equal(windows["chain"], 0)
        for start, window, aatype in zip(windows["start"], windows["ca"], windows["aatype"]):
            np.testing.assert_allclose(window, ca[start:start + 4], atol=1e-5)
            np.testing.assert_array_equal(aatype, chains[0]["aatype"][start:start + 4])
        strided = protein_dataset.ca_windows(chains, length=4, stride=3)
        self.assertEqual(strided["start"].tolist(), [0, 5, 8, 12, 15])  # Each run restarts the stride.
        self.assertEqual(protein_dataset.ca_windows(chains, length=30, stride=1)["ca"].shape, (0, 30, 3))
        with self.assertRaisesRegex(ValueError, "stride"):
            protein_dataset.ca_windows(chains, length=4, stride=0)

    def test_principal_axes_frame_is_a_canonical_proper_pose(self):
        traces = np.stack([ideal_backbone(12, phi, psi)[:, 1] for phi, psi in ((-57, -47), (-120, 130), (-70, 150))])
        posed = protein_dataset.principal_axes_frame(traces)
        moved = np.einsum("ij,nlj->nli", random_rotation(0), traces) + np.array([5.0, -3.0, 8.0])
        np.testing.assert_allclose(protein_dataset.principal_axes_frame(moved), posed, atol=1e-3)
        np.testing.assert_allclose(posed.mean(1), 0.0, atol=1e-4)
        covariance = np.einsum("nli,nlj->nij", posed, posed)
        for c in covariance:  # Diagonal, variances in decreasing order.
            np.testing.assert_allclose(c - np.diag(np.diag(c)), 0.0, atol=1e-2)
            self.assertTrue(np.all(np.diff(np.diag(c)) <= 0))

        def signed_volumes(x):  # Chirality: mirror images flip these signs.
            a, b, c = x[:, 1:-2] - x[:, :-3], x[:, 2:-1] - x[:, :-3], x[:, 3:] - x[:, :-3]
            return np.einsum("nli,nli->nl", np.cross(a, b), c)

        np.testing.assert_allclose(signed_volumes(posed), signed_volumes(traces), atol=1e-2)
        distances = lambda x: np.linalg.norm(x[:, :, None] - x[:, None], axis=-1)  # noqa: E731
        np.testing.assert_allclose(distances(posed), distances(traces), atol=1e-4)
        mask = np.ones((3, 12), bool)
        mask[:, 9:] = False
        padded = protein_dataset.principal_axes_frame(traces, mask)
        np.testing.assert_allclose(padded[:, :9], protein_dataset.principal_axes_frame(traces[:, :9]), atol=1e-4)
        np.testing.assert_array_equal(padded[:, 9:], 0.0)

    def test_first_residues_frame_and_its_fixed_coordinates(self):
        traces = np.stack([ideal_backbone(7, phi, psi)[:, 1] for phi, psi in ((-57, -47), (-120, 130))])
        posed = protein_dataset.first_residues_frame(traces)
        moved = np.einsum("ij,nlj->nli", random_rotation(2), traces) - 3.0
        np.testing.assert_allclose(protein_dataset.first_residues_frame(moved), posed, atol=1e-4)
        for residue, axis in protein_dataset.FIRST_RESIDUES_ZEROS:
            np.testing.assert_array_equal(posed[:, residue, axis], 0.0)
        np.testing.assert_allclose(posed[:, 1, 0], np.linalg.norm(traces[:, 1] - traces[:, 0], axis=-1), atol=1e-4)
        self.assertTrue(np.all(posed[:, 2, 1] > 0))
        distances = lambda x: np.linalg.norm(x[:, :, None] - x[:, None], axis=-1)  # noqa: E731
        np.testing.assert_allclose(distances(posed), distances(traces), atol=1e-4)
        mirrored = protein_dataset.first_residues_frame(traces * np.array([1.0, 1.0, -1.0]))
        np.testing.assert_allclose(mirrored[:, 3:, 2], -posed[:, 3:, 2], atol=1e-4)  # A proper rotation only.
        flat = protein_dataset.drop_fixed_coordinates(posed)
        self.assertEqual(flat.shape, (2, 15))
        np.testing.assert_array_equal(protein_dataset.restore_fixed_coordinates(flat, 7), posed)
        with self.assertRaisesRegex(ValueError, r"expected \[N, 18\] .*got shape \(2, 15\)"):
            protein_dataset.restore_fixed_coordinates(flat, 8)

    def test_ca_traces_written_as_pdb_models_read_back(self):
        traces = np.stack([ideal_backbone(5, phi, psi)[:, 1] for phi, psi in ((-57, -47), (-120, 130))]) - 20.0
        path = protein_dataset.write_ca_traces(os.path.join(self.create_tempdir().full_path, "s.pdb"), traces)
        structure = gemmi.read_structure(str(path))
        self.assertLen(structure, 2)
        for model, trace in zip(structure, traces):
            read = np.array([[a.pos.x, a.pos.y, a.pos.z] for r in model["A"] for a in r if a.name == "CA"])
            np.testing.assert_allclose(read, trace, atol=6e-4)  # Three decimals.
        chain = protein_dataset.read_backbone_chains(path)[0]  # The first model.
        np.testing.assert_allclose(chain["coords"][:, 1], traces[0], atol=6e-4)
        with self.assertRaisesRegex(ValueError, "outside the PDB format's range"):
            protein_dataset.write_ca_traces(path, traces * 1000)

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


def _write_pdb_lines(path, backbone, *, resname="ALA", chain="A", field=None):
    """One chain of `backbone` `[L, 4, 3]` as PDB ATOM records; `field=(residue, atom, start, text)`
    overwrites columns start+1.. of that atom's record with `text` (a raw field, as a broken writer left it)."""
    lines, serial = [], 1
    for i, residue in enumerate(backbone):
        for j, atom in enumerate(("N", "CA", "C", "O")):
            line = _atom_line(serial, atom, resname, chain, i + 1, " ", residue[j], atom[0])
            if field is not None and field[:2] == (i, atom):
                start, text = field[2], field[3]
                line = line[:start] + text + line[start + len(text):]
            lines.append(line)
            serial += 1
    with open(path, "w", encoding="latin-1") as f:
        f.write("\n".join(lines + ["END"]) + "\n")


def _write_mmcif(path, backbone, *, seq_id=None, x=None):
    """One chain of `backbone` as a minimal mmCIF `_atom_site` loop; `seq_id`/`x` replace residue 1's auth_seq_id / CA x."""
    rows = []
    for i, residue in enumerate(backbone):
        for j, atom in enumerate(("N", "CA", "C", "O")):
            xyz = [f"{v:.3f}" for v in residue[j]]
            if x is not None and (i, atom) == (1, "CA"):
                xyz[0] = x
            auth = seq_id if (seq_id is not None and i == 1) else str(i + 1)
            # label_seq_id '.', as gemmi itself writes it: auth_seq_id is the only residue number.
            rows.append(f"ATOM {len(rows) + 1} {atom[0]} {atom} . ALA A . ? {' '.join(xyz)} 1 20 {auth} A 1")
    header = ["data_test", "loop_"] + [f"_atom_site.{k}" for k in (
        "group_PDB", "id", "type_symbol", "label_atom_id", "label_alt_id", "label_comp_id", "label_asym_id",
        "label_seq_id", "pdbx_PDB_ins_code", "Cartn_x", "Cartn_y", "Cartn_z", "occupancy", "B_iso_or_equiv",
        "auth_seq_id", "auth_asym_id", "pdbx_PDB_model_num")]
    with open(path, "w") as f:
        f.write("\n".join(header + rows) + "\n")


class MalformedFileTest(absltest.TestCase):
    """Every malformed structure file raises DatasetFormatError naming it; skip_bad_files counts it."""

    def setUp(self):
        super().setUp()
        self.folder = self.create_tempdir().full_path
        self.backbone = ideal_backbone(4) + 10.0

    def _refused(self, name, pattern):
        path = os.path.join(self.folder, name)
        with self.assertRaisesRegex(DatasetFormatError, f"{name}:?[0-9]*: expected a PDB or mmCIF file.*{pattern}"):
            protein_dataset.read_backbone_chains(path)
        return path

    def test_pdb_coordinates_that_are_not_numbers_or_absurd(self):
        # Columns 31-38 hold x: gemmi read NaN as NaN (centring spread it), '********' and blanks as 0.0, 1e30 as is.
        for name, text in (("nan", "     nan"), ("stars", "********"), ("blank", "        "), ("huge", "   1e30 "),
                           ("inf", "    -inf"), ("far", "10000.00")):
            _write_pdb_lines(os.path.join(self.folder, name + ".pdb"), self.backbone, field=(1, "CA", 30, text))
            self._refused(name + ".pdb", rf"x coordinate \(columns 31-38\) '{re.escape(text)}' is not a finite number of magnitude below 10000 A")
        _write_pdb_lines(os.path.join(self.folder, "edge.pdb"), self.backbone, field=(1, "CA", 30, "9999.999"))
        self.assertAlmostEqual(float(protein_dataset.read_backbone_chains(os.path.join(self.folder, "edge.pdb"))[0]["coords"][1, 1, 0]), 9999.999, places=2)

    def test_pdb_residue_number_and_non_ascii_names(self):
        _write_pdb_lines(os.path.join(self.folder, "resseq.pdb"), self.backbone, field=(1, "CA", 22, "****"))
        self._refused("resseq.pdb", r"residue number \(columns 23-26\) '\*\*\*\*' is not a number")
        _write_pdb_lines(os.path.join(self.folder, "chain.pdb"), self.backbone, chain="\xe9")
        self._refused("chain.pdb", r"byte 0xe9 in column 22 of an atom record")
        _write_pdb_lines(os.path.join(self.folder, "residue.pdb"), self.backbone, resname="AL\xc4")
        self._refused("residue.pdb", r"byte 0xc4 in column 20 of an atom record")
        _write_pdb_lines(os.path.join(self.folder, "hybrid36.pdb"), self.backbone, field=(1, "CA", 22, "A000"))
        self.assertLen(protein_dataset.read_backbone_chains(os.path.join(self.folder, "hybrid36.pdb"))[0]["aatype"], 5)

    def test_mmcif_empty_unnumbered_and_bad_coordinates(self):
        with open(os.path.join(self.folder, "empty.cif"), "w"):
            pass
        self._refused("empty.cif", "the file is empty")
        _write_mmcif(os.path.join(self.folder, "good.cif"), self.backbone)
        chain = protein_dataset.read_backbone_chains(os.path.join(self.folder, "good.cif"))[0]
        np.testing.assert_allclose(chain["coords"], self.backbone, atol=6e-4)
        _write_mmcif(os.path.join(self.folder, "unnumbered.cif"), self.backbone, seq_id="?")
        self._refused("unnumbered.cif", r"chain A: 1 residue\(s\) \(ALA\) have no residue number \(an mmCIF auth_seq_id of '\?' or '\.'\)")
        for name, x in (("unknown_x.cif", "?"), ("nan_x.cif", "nan"), ("huge_x.cif", "1e30")):
            _write_mmcif(os.path.join(self.folder, name), self.backbone, x=x)
            self._refused(name, r"chain A residue ALA 2: atom CA at \[.*\], expected finite coordinates of magnitude below 10000 A")

    def test_truncated_gzip_is_refused_not_read_short(self):
        _write_pdb_lines(os.path.join(self.folder, "chain.pdb"), ideal_backbone(40))
        with open(os.path.join(self.folder, "chain.pdb"), "rb") as f:
            packed = gzip.compress(f.read())
        for name, data in (("no_trailer.pdb.gz", packed[:-8]), ("half.pdb.gz", packed[: len(packed) // 2]),
                           ("bad_crc.pdb.gz", packed[:-8] + bytes(4) + packed[-4:])):
            with open(os.path.join(self.folder, name), "wb") as f:
                f.write(data)
            self._refused(name, r"the gzip stream is truncated or corrupt")
        with open(os.path.join(self.folder, "whole.pdb.gz"), "wb") as f:
            f.write(packed)
        self.assertLen(protein_dataset.read_backbone_chains(os.path.join(self.folder, "whole.pdb.gz"))[0]["aatype"], 40)

    def test_every_bad_file_is_skipped_and_counted(self):
        _write_pdb_lines(os.path.join(self.folder, "a_good.pdb"), self.backbone)
        _write_pdb_lines(os.path.join(self.folder, "b_nan.pdb"), self.backbone, field=(0, "N", 30, "     nan"))
        _write_pdb_lines(os.path.join(self.folder, "c_chain.pdb"), self.backbone, chain="\xe9")
        _write_mmcif(os.path.join(self.folder, "d_unnumbered.cif"), self.backbone, seq_id="?")
        with open(os.path.join(self.folder, "e_empty.cif"), "w"):
            pass
        with open(os.path.join(self.folder, "f_short.pdb.gz"), "wb") as f:
            f.write(gzip.compress(b"ATOM  " * 100)[:-8])
        dataset = protein_dataset.ProteinDataset(self.folder, skip_bad_files=True)
        self.assertEqual([os.path.basename(p) for p, _ in dataset.skipped],
                         ["b_nan.pdb", "c_chain.pdb", "d_unnumbered.cif", "e_empty.cif", "f_short.pdb.gz"])
        self.assertLen(dataset, 1)
        self.assertTrue(np.all(np.isfinite(dataset[0]["coords"])))


class CisPeptideTest(absltest.TestCase):

    def test_peptide_mask_holds_the_trans_bonds_the_3_80_target_applies_to(self):
        # Bonds 0-1 and 2-3 trans (CA-CA 3.80 A), 1-2 cis (omega 0, CA-CA 2.77 A for these ideal angles).
        backbone = ideal_backbone(4, phi=-75.0, psi=145.0, omega=[180.0, 0.0, 180.0])
        folder = self.create_tempdir().full_path
        _write_pdb_lines(os.path.join(folder, "cis.pdb"), backbone)
        chain = protein_dataset.ProteinDataset(folder)[0]
        np.testing.assert_array_equal(chain["peptide_mask"], [True, False, True, False])
        np.testing.assert_array_equal(chain["cis_peptide"], [False, True, False, False])
        np.testing.assert_allclose(chain["ca_ca_distance"], [3.804, 2.771, 3.804, 0.0], atol=2e-3)
        # Where peptide_mask holds, the 3.80 A target is met; where cis_peptide holds, it is not.
        self.assertTrue(np.all(np.abs(chain["ca_ca_distance"][chain["peptide_mask"]] - 3.80) < 0.02))
        self.assertTrue(np.all(np.abs(chain["ca_ca_distance"][chain["cis_peptide"]] - 2.9) < 0.2))
        np.testing.assert_array_equal(protein_dataset.cis_peptides(backbone), [False, True, False])
        arrays = protein_dataset.ProteinDataset(folder).as_arrays(max_length=2)
        np.testing.assert_array_equal(arrays["cis_peptide"], [[False, False]])  # Bond 1-2 was cut off.


_PYMOL_DIR = "/usr/share/pymol/data/demo"


@absltest.skipUnless(os.path.isdir(_PYMOL_DIR), f"{_PYMOL_DIR} is missing: apt-get install pymol-data")
class RealPymolTest(absltest.TestCase):

    def test_real_cis_peptides_are_out_of_the_trans_target(self):
        dataset = protein_dataset.ProteinDataset(os.path.join(_PYMOL_DIR, "1tii.pdb"))
        cis = np.concatenate([e["ca_ca_distance"][e["cis_peptide"]] for e in dataset])
        trans = np.concatenate([e["ca_ca_distance"][e["peptide_mask"]] for e in dataset])
        self.assertLen(cis, 11)  # The cis prolines of the toxin's five B chains and of chain A.
        self.assertTrue(np.all((cis > 2.7) & (cis < 3.1)))
        self.assertTrue(np.all((trans > 3.7) & (trans < 3.95)))

    def test_pre_1996_layout_of_1hpv(self):
        path = os.path.join(os.path.dirname(_PYMOL_DIR), "tut", "1hpv.pdb")
        if not os.path.isfile(path):
            self.skipTest(f"{path} is missing")
        chains = protein_dataset.read_backbone_chains(path)  # Columns 73-80 hold "1HPV" and line numbers.
        self.assertEqual([(c["chain"], len(c["aatype"])) for c in chains], [("A", 99), ("B", 99)])
        self.assertTrue(chains[0]["sequence"].startswith("PQITLWQRPL"))  # HIV-1 protease.
        values, present = protein_dataset.backbone_geometry(chains[0]["coords"], chains[0]["atom_mask"])["N-CA"]
        self.assertLess(np.sqrt(np.mean((values[present] - protein_dataset.IDEAL_BACKBONE["N-CA"][0]) ** 2)), 0.1)


if __name__ == "__main__":
    absltest.main()
