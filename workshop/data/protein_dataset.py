"""Protein backbones read from PDB and mmCIF files with gemmi, their geometry, CA traces and a PDB writer.

Formats: the wwPDB "Protein Data Bank Contents Guide" v3.3 (fixed-column
`ATOM`/`HETATM` records) and PDBx/mmCIF (`_atom_site` loop), either gzipped,
parsed by gemmi (Wojdyr, 2022, "GEMMI: A library for structural biology",
JOSS 7(73):4200). For each protein chain of the first model the dataset keeps
the backbone atoms N, CA, C, O of every amino-acid residue (modified ones such
as MSE count as their parent), with a mask for atoms missing from the file;
insertion codes (`52A`) are separate residues; hydrogens, waters, ligands and
alternative conformations other than the first are dropped.

Files are checked, not trusted: a gzipped file is read to the end of its
stream (a truncated one, missing its trailer, is refused), every PDB
`ATOM`/`HETATM` record must hold ASCII, a residue number and three numeric
coordinates, and every backbone coordinate kept must be finite with
|x| < `MAX_COORDINATE` (10^4 A: the PDB format's own range ends at 9999.999,
and no deposited structure comes near it). Anything else raises
`DatasetFormatError` naming the file (and line or residue).

Ideal geometry (`IDEAL_BACKBONE`): Engh & Huber (1991), "Accurate bond and
angle parameters for X-ray protein structure refinement", Acta Cryst. A47:392;
CA-CA 3.80 A for trans peptides (cis peptides, `cis_peptides`, hold about 2.9 A). `backbone_geometry` measures a backbone's
bonds, angles and consecutive CA-CA distances (the dataset's constraint
features); `workshop.eval.protein_geometry` scores backbones and CA traces
against them.

CA traces (the input of CA-only generative models): `ca_windows` cuts chains
into fixed-length windows of consecutive residues with every CA present and
no chain break, `principal_axes_frame` and `first_residues_frame` put each
window in a canonical pose, and `write_ca_traces` writes traces as PDB
models (to view samples in PyMOL).
"""

from __future__ import annotations

import gzip
import math
import os
import pathlib
import re
import zlib

import gemmi
import numpy as np

from workshop.data.idx import DatasetFormatError

__all__ = [
    "AMINO_ACIDS",
    "BACKBONE_ATOMS",
    "IDEAL_BACKBONE",
    "MAX_COORDINATE",
    "PROTEIN_EXTENSIONS",
    "ProteinDataset",
    "angles",
    "backbone_geometry",
    "cis_peptides",
    "distances",
    "FIRST_RESIDUES_ZEROS",
    "ca_windows",
    "drop_fixed_coordinates",
    "first_residues_frame",
    "principal_axes_frame",
    "read_backbone_chains",
    "restore_fixed_coordinates",
    "write_ca_traces",
]

BACKBONE_ATOMS = ("N", "CA", "C", "O")
AMINO_ACIDS = "ARNDCQEGHILKMFPSTWYV"  # aatype 0..19; 20 is any other residue.
PROTEIN_EXTENSIONS = (".pdb", ".ent", ".cif", ".mmcif", ".pdb.gz", ".ent.gz", ".cif.gz", ".mmcif.gz")
_FORMAT = "expected a PDB or mmCIF file with protein ATOM records"
# term -> (ideal value, standard deviation); lengths in Angstrom, angles in degrees.
IDEAL_BACKBONE = {
    "N-CA": (1.458, 0.019),
    "CA-C": (1.525, 0.021),
    "C-O": (1.231, 0.020),
    "C-N": (1.329, 0.014),  # The peptide bond to the next residue.
    "N-CA-C": (111.2, 2.8),
    "CA-C-N": (116.2, 2.0),
    "C-N-CA": (121.7, 1.8),
    "CA-C-O": (120.1, 2.1),
    "CA-CA": (3.80, 0.05),
}
_PEPTIDE_BOND_MAX = 2.0  # C(i)-N(i+1) beyond this is a chain break.
MAX_COORDINATE = 1e4  # Angstrom; see the module docstring.
# Larger (decompressed) files are refused before they are read: the largest
# deposited mmCIF files are a few hundred MB.
_MAX_STRUCTURE_BYTES = 2**31


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| over the last axis (Angstrom): `[..., 3], [..., 3] -> [...]`."""
    return np.linalg.norm(a - b, axis=-1)


def angles(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The angle a-b-c in degrees: `[..., 3] x 3 -> [...]`."""
    u, v = a - b, c - b
    cosine = (u * v).sum(-1) / np.maximum(np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1), 1e-8)
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def _dihedral(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The torsion a-b-c-d in degrees, in (-180, 180] (IUPAC sign)."""
    b0, b1, b2 = a - b, c - b, d - c
    b1 = b1 / np.maximum(np.linalg.norm(b1, axis=-1, keepdims=True), 1e-8)
    v = b0 - (b0 * b1).sum(-1, keepdims=True) * b1
    w = b2 - (b2 * b1).sum(-1, keepdims=True) * b1
    return np.degrees(np.arctan2((np.cross(b1, v) * w).sum(-1), (v * w).sum(-1)))


def cis_peptides(coords: np.ndarray, atom_mask: np.ndarray | None = None) -> np.ndarray:
    """Which peptide bonds of a chain are cis: omega, the torsion CA(i)-C(i)-N(i+1)-CA(i+1), within 90 degrees of 0.

    Trans peptides (omega near 180) hold consecutive CAs 3.80 A apart, cis
    ones (about 5% of the bonds before a proline, omega near 0) about 2.9 A.

    Args:
      coords: float `[L, 4, 3]` (N, CA, C, O).
      atom_mask: bool `[L, 4]` (default all present).

    Returns:
      bool `[L - 1]`: True where residues i and i + 1 are bonded (as in
      `backbone_geometry`'s "CA-CA" mask) and the bond is cis.
    """
    coords = np.asarray(coords, np.float64)
    _, linked = backbone_geometry(coords, atom_mask)["CA-CA"]
    omega = _dihedral(coords[:-1, 1], coords[:-1, 2], coords[1:, 0], coords[1:, 1])
    return linked & (np.abs(omega) < 90.0)


def backbone_geometry(coords: np.ndarray, atom_mask: np.ndarray | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Measures every term of `IDEAL_BACKBONE` along one chain.

    Args:
      coords: float `[L, 4, 3]`, atoms in `BACKBONE_ATOMS` order.
      atom_mask: bool `[L, 4]`, True where an atom exists (default all).

    Returns:
      term -> `(values, mask)`: float64 `[L]` for within-residue terms, `[L - 1]`
      for terms between residue i and i + 1; `mask` is True where every atom
      involved exists and, between residues, the peptide bond is not broken.
    """
    coords = np.asarray(coords, np.float64)
    mask = np.ones(coords.shape[:2], bool) if atom_mask is None else np.asarray(atom_mask, bool)
    n, ca, c, o = (coords[:, i] for i in range(4))
    mn, mca, mc, mo = (mask[:, i] for i in range(4))
    peptide = distances(c[:-1], n[1:])
    linked = mc[:-1] & mn[1:] & (peptide < _PEPTIDE_BOND_MAX)
    return {
        "N-CA": (distances(n, ca), mn & mca),
        "CA-C": (distances(ca, c), mca & mc),
        "C-O": (distances(c, o), mc & mo),
        "C-N": (peptide, linked),
        "N-CA-C": (angles(n, ca, c), mn & mca & mc),
        "CA-C-N": (angles(ca[:-1], c[:-1], n[1:]), linked & mca[:-1]),
        "C-N-CA": (angles(c[:-1], n[1:], ca[1:]), linked & mca[1:]),
        "CA-C-O": (angles(ca, c, o), mca & mc & mo),
        "CA-CA": (distances(ca[:-1], ca[1:]), linked & mca[:-1] & mca[1:]),
    }


_CA_CA_BREAK = 4.2  # Consecutive CAs farther apart are a chain break (trans peptides 3.80 A, cis 2.9 A).
def ca_windows(examples: list[dict], length: int, stride: int) -> dict[str, np.ndarray]:
    """Cuts chains into windows of `length` consecutive residues, every CA present, no break.

    A chain is split into runs of residues whose CA exists and whose
    consecutive CA-CA distance is at most 4.2 A; each run of at least `length`
    residues gives windows starting at its first residue and every `stride`
    residues after that.

    Args:
      examples: dicts of `read_backbone_chains` (`"coords"` `[L, 4, 3]`,
        `"atom_mask"` `[L, 4]`, `"aatype"` `[L]`).
      length: residues per window.
      stride: residues between the starts of consecutive windows of a run.

    Returns:
      `"ca"` float32 `[M, length, 3]` (coordinates as in the examples),
      `"aatype"` int32 `[M, length]`, `"chain"` int32 `[M]` (index into
      `examples`), `"start"` int32 `[M]` (first residue).
    """
    if length < 1 or stride < 1:
        raise ValueError(f"ca_windows: length ({length}) and stride ({stride}) must be positive")
    ca_out, aatype_out, chain_out, start_out = [], [], [], []
    for index, example in enumerate(examples):
        ca, present = example["coords"][:, 1], example["atom_mask"][:, 1]
        linked = present[:-1] & present[1:] & (distances(ca[:-1], ca[1:]) <= _CA_CA_BREAK)
        # Run boundaries: a residue without CA ends a run and starts none; a break ends one.
        run_start = None
        for i in range(len(ca) + 1):
            if run_start is None:
                if i < len(ca) and present[i]:
                    run_start = i
                continue
            if i == len(ca) or not linked[i - 1]:
                for start in range(run_start, i - length + 1, stride):
                    ca_out.append(ca[start:start + length])
                    aatype_out.append(example["aatype"][start:start + length])
                    chain_out.append(index)
                    start_out.append(start)
                run_start = i if i < len(ca) and present[i] else None
    return {
        "ca": np.asarray(ca_out, np.float32).reshape(-1, length, 3),
        "aatype": np.asarray(aatype_out, np.int32).reshape(-1, length),
        "chain": np.asarray(chain_out, np.int32),
        "start": np.asarray(start_out, np.int32),
    }


def principal_axes_frame(ca: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Each trace centred and turned (a proper rotation) onto its principal axes.

    Axis 1 is the direction of largest variance, signed so the last CA lies
    ahead of the first; axis 2 the second largest, signed so the first CA lies
    on its positive side; axis 3 = axis 1 x axis 2, so chirality is kept. The
    result does not depend on the trace's position or orientation (a canonical
    pose for models that are not rotation invariant), except where two
    variances are nearly equal (a long ideal helix is almost round about its
    axis): there axes 2 and 3 may turn with small changes of the input.

    Args:
      ca: float `[N, L, 3]`.
      mask: bool `[N, L]`, True for present residues (default all); masked
        positions are left at 0.

    Returns:
      float32 `[N, L, 3]`.
    """
    ca = np.asarray(ca, np.float64)
    mask = np.ones(ca.shape[:2], bool) if mask is None else np.asarray(mask, bool)
    weights = mask[..., None].astype(np.float64)
    count = np.maximum(weights.sum(1, keepdims=True), 1.0)
    centred = (ca - (ca * weights).sum(1, keepdims=True) / count) * weights
    _, vectors = np.linalg.eigh(np.einsum("nli,nlj->nij", centred, centred))
    e1, e2 = vectors[..., 2], vectors[..., 1]  # eigh sorts eigenvalues ascending.
    rows = np.arange(len(ca))
    first = mask.argmax(1)
    last = mask.shape[1] - 1 - mask[:, ::-1].argmax(1)
    e1 *= np.where(np.einsum("ni,ni->n", centred[rows, last] - centred[rows, first], e1) < 0, -1.0, 1.0)[:, None]
    e2 *= np.where(np.einsum("ni,ni->n", centred[rows, first], e2) < 0, -1.0, 1.0)[:, None]
    rotation = np.stack([e1, e2, np.cross(e1, e2)], axis=1)  # [N, 3, 3], rows are the new axes.
    return (np.einsum("nij,nlj->nli", rotation, centred) * weights).astype(np.float32)


# Coordinates (residue, axis) that `first_residues_frame` fixes at 0, flat indices of `[3L]`.
FIRST_RESIDUES_ZEROS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def first_residues_frame(ca: np.ndarray) -> np.ndarray:
    """Each trace moved so CA 0 is at the origin, CA 1 on the +x axis and CA 2 in the xy-plane (y > 0).

    The frame of the first three residues (as a Z-matrix anchors a chain): a
    proper rotation, so chirality is kept, and well defined for every real
    chain (consecutive CAs never lie on one line). Six coordinates
    (`FIRST_RESIDUES_ZEROS`) are then 0 for every trace, so a density model
    sees the other 3L - 6 (`drop_fixed_coordinates`).

    Args:
      ca: float `[N, L, 3]`, L >= 3, every CA present.

    Returns:
      float32 `[N, L, 3]`.
    """
    ca = np.asarray(ca, np.float64)
    if ca.ndim != 3 or ca.shape[1] < 3:
        raise ValueError(f"first_residues_frame: expected CA traces [N, L, 3] with L >= 3, got shape {ca.shape}")
    moved = ca - ca[:, :1]
    e1 = moved[:, 1] / np.linalg.norm(moved[:, 1], axis=-1, keepdims=True)
    third = moved[:, 2] - np.einsum("ni,ni->n", moved[:, 2], e1)[:, None] * e1
    e2 = third / np.maximum(np.linalg.norm(third, axis=-1, keepdims=True), 1e-8)
    rotation = np.stack([e1, e2, np.cross(e1, e2)], axis=1)
    out = np.einsum("nij,nlj->nli", rotation, moved)
    out[:, 0] = 0.0
    out[:, 1, 1:] = 0.0
    out[:, 2, 2] = 0.0
    return out.astype(np.float32)


_FIXED_FLAT = [3 * residue + axis for residue, axis in FIRST_RESIDUES_ZEROS]


def drop_fixed_coordinates(ca: np.ndarray) -> np.ndarray:
    """`[N, L, 3]` in `first_residues_frame` -> `[N, 3L - 6]` without the six zeros."""
    return np.delete(np.asarray(ca).reshape(len(ca), -1), _FIXED_FLAT, axis=1)


def restore_fixed_coordinates(flat: np.ndarray, length: int) -> np.ndarray:
    """`[N, 3L - 6]` -> `[N, L, 3]`, the inverse of `drop_fixed_coordinates`."""
    flat = np.asarray(flat)
    if flat.ndim != 2 or flat.shape[1] != 3 * length - 6:
        raise ValueError(f"expected [N, {3 * length - 6}] (3L - 6 for L={length}), got shape {flat.shape}")
    out = np.zeros((len(flat), 3 * length), flat.dtype)
    keep = np.setdiff1d(np.arange(3 * length), _FIXED_FLAT)
    out[:, keep] = flat
    return out.reshape(len(flat), length, 3)


def write_ca_traces(path: str | os.PathLike, traces: np.ndarray, *, chain: str = "A") -> pathlib.Path:
    """Writes CA traces as a PDB file, one MODEL per trace (alanine CAs), e.g. to view samples in PyMOL.

    Args:
      path: the `.pdb` file to write.
      traces: float `[N, L, 3]` in Angstrom, within the format's -999.999..9999.999.

    Returns:
      The path written.
    """
    traces = np.asarray(traces, np.float64)
    if traces.ndim != 3 or traces.shape[-1] != 3:
        raise ValueError(f"write_ca_traces: expected CA traces [N, L, 3], got shape {traces.shape}")
    if not np.all(np.isfinite(traces)) or traces.min() < -999.999 or traces.max() > 9999.999:
        raise ValueError(f"write_ca_traces: coordinates outside the PDB format's range -999.999..9999.999 "
                         f"(min {traces.min():g}, max {traces.max():g})")
    lines = []
    for model, trace in enumerate(traces, start=1):
        lines.append(f"MODEL     {model:4d}")
        lines += [f"ATOM  {i + 1:5d}  CA  ALA {chain}{i + 1:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00           C"
                  for i, (x, y, z) in enumerate(trace)]
        lines.append("ENDMDL")
    path = pathlib.Path(path)
    path.write_text("\n".join(lines + ["END"]) + "\n")
    return path


def _aatype(name: str) -> int:
    code = gemmi.find_tabulated_residue(name).one_letter_code.upper()
    return AMINO_ACIDS.index(code) if code in AMINO_ACIDS else len(AMINO_ACIDS)


def _is_mmcif(path: pathlib.Path) -> bool:
    return path.name.lower().removesuffix(".gz").endswith((".cif", ".mmcif"))


def _read_bytes(path: pathlib.Path) -> bytes:
    """The file's bytes, a `.gz` file decompressed to the end of its stream (CRC and length checked)."""
    if not path.name.lower().endswith(".gz"):
        size = path.stat().st_size
        if size > _MAX_STRUCTURE_BYTES:
            raise DatasetFormatError(f"{path}: {_FORMAT}; {size} bytes is more than the {_MAX_STRUCTURE_BYTES} a structure may hold")
        return path.read_bytes()
    chunks, total = [], 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(2**24):
                total += len(chunk)
                if total > _MAX_STRUCTURE_BYTES:
                    raise DatasetFormatError(
                        f"{path}: {_FORMAT}; it decompresses to more than the {_MAX_STRUCTURE_BYTES} bytes a structure may hold"
                    )
                chunks.append(chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DatasetFormatError(f"{path}: {_FORMAT}, gzipped; the gzip stream is truncated or corrupt ({e})") from e
    return b"".join(chunks)


# A coordinate as the PDB format writes it (8.3f; an exponent is tolerated); not nan, inf, blank or ********.
_PDB_NUMBER = re.compile(rb"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*")
# resSeq, columns 23-26: an integer, or hybrid-36 ("A000") beyond 9999.
_PDB_RESSEQ = re.compile(rb"\s*-?\d{1,4}|[A-Za-z][0-9A-Za-z]{3}")


def _check_pdb_records(data: bytes, path: pathlib.Path) -> None:
    """Refuses `ATOM`/`HETATM` records whose fields gemmi would read as something else.

    gemmi reads a blank or `********` coordinate as 0, `nan` as NaN, a resSeq
    of `****` as residue 0, and stops on a byte >= 0x80 only when a name is
    used; each is a malformed record, named here by line and columns.
    """
    for line_number, line in enumerate(data.split(b"\n"), 1):
        if not line.startswith((b"ATOM  ", b"HETATM")):
            continue
        if not line.isascii():
            column = next(i for i, byte in enumerate(line) if byte >= 0x80) + 1
            raise DatasetFormatError(
                f"{path}:{line_number}: {_FORMAT}; byte 0x{line[column - 1]:02x} in column {column} of an atom "
                "record (the format is ASCII)"
            )
        if len(line.rstrip()) < 54:
            continue  # Too short for coordinates: gemmi's parser names it.
        if not _PDB_RESSEQ.fullmatch(line[22:26]):
            raise DatasetFormatError(
                f"{path}:{line_number}: {_FORMAT}; residue number (columns 23-26) {line[22:26].decode()!r} is not a number"
            )
        for axis, start in (("x", 30), ("y", 38), ("z", 46)):
            field = line[start:start + 8]
            value = float(field) if _PDB_NUMBER.fullmatch(field) else math.nan
            if not abs(value) < MAX_COORDINATE:
                raise DatasetFormatError(
                    f"{path}:{line_number}: {_FORMAT}; {axis} coordinate (columns {start + 1}-{start + 8}) "
                    f"{field.decode()!r} is not a finite number of magnitude below {MAX_COORDINATE:g} A"
                )


def _parse_structure(path: pathlib.Path) -> gemmi.Structure:
    """Reads and checks the file, then parses it with gemmi (mmCIF by extension, else PDB)."""
    data = _read_bytes(path)
    if not data.strip():
        raise DatasetFormatError(f"{path}: {_FORMAT}; the file is empty")
    if _is_mmcif(path):
        try:
            return gemmi.read_structure_string(data, format=gemmi.CoorFormat.Mmcif)
        except (RuntimeError, ValueError, IndexError) as e:  # An empty file: IndexError.
            raise DatasetFormatError(f"{path}: {_FORMAT}; gemmi could not parse it ({e})") from e
    _check_pdb_records(data, path)
    try:
        return gemmi.read_structure_string(data, format=gemmi.CoorFormat.Pdb)
    except (RuntimeError, ValueError, IndexError) as e:
        # The pre-1996 layout holds a record id in columns 73-80, where the element and
        # charge now are ("Wrong format for charge"); read up to column 72 it is valid.
        try:
            return gemmi.read_pdb_string(data, max_line_length=72)
        except (RuntimeError, ValueError, IndexError):
            raise DatasetFormatError(f"{path}: {_FORMAT}; gemmi could not parse it ({e})") from e


def read_backbone_chains(path: str | os.PathLike, chains: tuple[str, ...] | None = None) -> list[dict]:
    """Reads the protein chains of one PDB/mmCIF file (first model).

    Args:
      path: `.pdb`, `.ent`, `.cif`, `.mmcif`, optionally `.gz`.
      chains: chain names to keep (author names, e.g. ("A",)); None keeps all.

    Returns:
      One dict per chain with at least one amino-acid residue: `"coords"`
      float32 `[L, 4, 3]` (0 where missing), `"atom_mask"` bool `[L, 4]`,
      `"aatype"` int32 `[L]`, `"sequence"` str, `"residue_number"` int32 `[L]`,
      `"insertion_code"` str of length L (" " for none), `"chain"`, `"path"`.

    Raises:
      FileNotFoundError: no such file.
      DatasetFormatError: unparsable (an mmCIF loop or a PDB record cut short,
        as in a truncated file; a gzip stream cut short), a malformed atom
        record (non-ASCII, a residue number or coordinate that is not a
        number), a residue without a number, a backbone coordinate that is not
        finite or not below `MAX_COORDINATE`, or no protein residue; the message
        names the file and the expected format. A plain PDB file cut exactly at
        a line end reads as a shorter structure: the format has no length field.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"structure file not found: {path} ({_FORMAT})")
    structure = _parse_structure(path)
    try:
        return _backbone_chains(structure, path, chains)
    except (UnicodeDecodeError, TypeError, IndexError, RuntimeError) as e:
        # A name gemmi holds as bytes that are not UTF-8, or a field it left empty.
        raise DatasetFormatError(f"{path}: {_FORMAT}; {type(e).__name__}: {e}") from e


def _backbone_chains(structure: gemmi.Structure, path: pathlib.Path, chains: tuple[str, ...] | None) -> list[dict]:
    if len(structure) == 0:
        raise DatasetFormatError(f"{path}: {_FORMAT}; it holds no model (truncated or empty?)")
    structure.remove_hydrogens()
    structure.remove_alternative_conformations()
    result = []
    for chain in structure[0]:
        if chains is not None and chain.name not in chains:
            continue
        residues = [r for r in chain if gemmi.find_tabulated_residue(r.name).is_amino_acid()]
        if not residues:
            continue
        coords = np.zeros((len(residues), 4, 3), np.float32)
        mask = np.zeros((len(residues), 4), bool)
        for i, residue in enumerate(residues):
            for j, atom_name in enumerate(BACKBONE_ATOMS):
                atom = residue.find_atom(atom_name, "*")
                if atom is not None:
                    coords[i, j] = (atom.pos.x, atom.pos.y, atom.pos.z)
                    mask[i, j] = True
        unnumbered = [r.name for r in residues if r.seqid.num is None]
        if unnumbered:
            raise DatasetFormatError(
                f"{path}: {_FORMAT}; chain {chain.name}: {len(unnumbered)} residue(s) ({', '.join(unnumbered[:3])}) have no "
                "residue number (an mmCIF auth_seq_id of '?' or '.')"
            )
        present = coords[mask]
        if not np.all(np.abs(present) < MAX_COORDINATE):  # False for NaN too.
            i, j = np.argwhere(mask & ~np.all(np.abs(coords) < MAX_COORDINATE, axis=-1))[0]
            raise DatasetFormatError(
                f"{path}: {_FORMAT}; chain {chain.name} residue {residues[i].name} {residues[i].seqid.num}: "
                f"atom {BACKBONE_ATOMS[j]} at {coords[i, j].tolist()}, expected finite coordinates of magnitude "
                f"below {MAX_COORDINATE:g} A"
            )
        aatype = np.array([_aatype(r.name) for r in residues], np.int32)
        result.append({
            "coords": coords,
            "atom_mask": mask,
            "aatype": aatype,
            "sequence": "".join(AMINO_ACIDS[a] if a < 20 else "X" for a in aatype),
            "residue_number": np.array([r.seqid.num for r in residues], np.int32),
            "insertion_code": "".join(r.seqid.icode for r in residues),
            "chain": chain.name,
            "path": path,
        })
    if not result:
        wanted = f" in chains {list(chains)}" if chains is not None else ""
        raise DatasetFormatError(f"{path}: {_FORMAT}; no amino-acid residue found{wanted}")
    return result


class ProteinDataset:
    """Protein chains from a folder of PDB/mmCIF files, one example per chain.

    Attributes:
      examples: the dicts of `read_backbone_chains`, coordinates centred on the
        chain's mean CA position when `center`.
      skipped: `(path, problem)` of each bad file left out (`skip_bad_files=True`).
    """

    def __init__(
        self,
        pdb_dir: str | os.PathLike,
        with_constraints: bool = True,
        *,
        chains: tuple[str, ...] | None = None,
        center: bool = True,
        min_length: int = 1,
        skip_bad_files: bool = False,
    ):
        """Reads every structure file under `pdb_dir` (recursively).

        Args:
          pdb_dir: a folder of `.pdb`/`.ent`/`.cif`/`.mmcif` files (`.gz` too), or one file.
          with_constraints: add the geometry targets of `IDEAL_BACKBONE` to each
            example: `"ca_ca_distance"` float32 `[L]` (observed CA(i)-CA(i+1)
            wherever residue i is bonded to i + 1, cis or trans; 0 at the end
            and at breaks), `"peptide_mask"` bool `[L]` (residue i is bonded to
            i + 1 by a trans peptide: exactly the pairs the 3.80 A CA-CA target
            applies to), `"cis_peptide"` bool `[L]` (bonded by a cis peptide,
            CA-CA about 2.9 A: not in `peptide_mask`; see `cis_peptides`).
          chains: author chain names to keep; None keeps every protein chain.
          center: subtract each chain's mean CA position.
          min_length: leave out chains with fewer residues.
          skip_bad_files: leave unreadable files out (listed in `skipped`).

        Raises:
          FileNotFoundError: `pdb_dir` is missing or holds no structure file.
          DatasetFormatError: a file is unparsable or has no protein (unless skipped).
        """
        self.data_dir = pathlib.Path(pdb_dir)
        if self.data_dir.is_file():
            paths = [self.data_dir]
        elif self.data_dir.is_dir():
            paths = sorted(p for p in self.data_dir.rglob("*") if p.name.lower().endswith(PROTEIN_EXTENSIONS))
        else:
            raise FileNotFoundError(f"structure folder not found: {self.data_dir} ({_FORMAT})")
        if not paths:
            raise FileNotFoundError(f"no {', '.join(PROTEIN_EXTENSIONS)} files under {self.data_dir}")
        self.with_constraints = with_constraints
        self.examples, self.skipped = [], []
        for path in paths:
            try:
                found = read_backbone_chains(path, chains)
            except DatasetFormatError as e:
                if not skip_bad_files:
                    raise
                self.skipped.append((path, str(e)))
                continue
            for example in found:
                if len(example["aatype"]) < min_length:
                    continue
                if center and example["atom_mask"][:, 1].any():
                    ca_mean = example["coords"][example["atom_mask"][:, 1], 1].mean(axis=0)
                    example["coords"] = np.where(example["atom_mask"][..., None], example["coords"] - ca_mean, 0.0).astype(np.float32)
                if with_constraints:
                    values, bonded = backbone_geometry(example["coords"], example["atom_mask"])["CA-CA"]
                    cis = cis_peptides(example["coords"], example["atom_mask"])
                    example["peptide_mask"] = np.append(bonded & ~cis, False)
                    example["cis_peptide"] = np.append(cis, False)
                    example["ca_ca_distance"] = np.append(np.where(bonded, values, 0.0), 0.0).astype(np.float32)
                self.examples.append(example)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        """The dict of chain `index` (see `read_backbone_chains`)."""
        return self.examples[index]

    def as_arrays(self, max_length: int | None = None) -> dict[str, np.ndarray]:
        """Chains padded (or cut) to `max_length` residues, for `BatchPipeline`.

        Returns:
          `"coords"` float32 `[N, L, 4, 3]`, `"atom_mask"` bool `[N, L, 4]`,
          `"aatype"` int32 `[N, L]` (20 in padding), `"residue_mask"` bool `[N, L]`,
          and with constraints `"ca_ca_distance"` float32 `[N, L]`, `"peptide_mask"` and
          `"cis_peptide"` bool `[N, L]` (see `ProteinDataset`).
          `L` is `max_length`, default the longest chain; longer chains keep their first `L` residues.
        """
        length = max_length or max(len(e["aatype"]) for e in self.examples)
        keys = {"coords": np.float32, "atom_mask": bool, "aatype": np.int32}
        if self.with_constraints:
            keys.update(ca_ca_distance=np.float32, peptide_mask=bool, cis_peptide=bool)
        out = {k: np.zeros((len(self), length) + self.examples[0][k].shape[1:], dtype) for k, dtype in keys.items()}
        out["aatype"][:] = len(AMINO_ACIDS)
        out["residue_mask"] = np.zeros((len(self), length), bool)
        for i, example in enumerate(self.examples):
            n = min(length, len(example["aatype"]))
            for key in keys:
                out[key][i, :n] = example[key][:n]
            out["residue_mask"][i, :n] = True
            if self.with_constraints and n < len(example["aatype"]):
                out["peptide_mask"][i, n - 1] = out["cis_peptide"][i, n - 1] = False  # Its partner was cut off.
        return out

    def __repr__(self) -> str:
        return f"ProteinDataset({len(self)} chains from {self.data_dir})"
