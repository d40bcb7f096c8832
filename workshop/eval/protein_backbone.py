"""Scores generated protein CA traces against held-out real windows and Gaussian baselines.

A model trained on dataset "protein" with `window_stride` (e.g.
`workshop/train/configs/protein_backbone.py`) generates CA traces of
`sequence_length` residues. `compare_traces` scores them with
`workshop.eval.protein_geometry.score_ca_trace` (consecutive CA-CA distances
against 3.80 A, CA-CA-CA angles, clashes) next to the same scores of

* `"held_out"`: the real windows of the held-out chains (what good looks like);
* `"train"`: the real training windows (without added noise);
* `"gaussian_matched_scale"`: each coordinate drawn independently from a
  normal with the mean and standard deviation of that coordinate over the
  training windows (noise of matched scale);
* `"gaussian_fit"`: a full-covariance normal fitted to the training windows
  (a strong baseline: it captures all pairwise correlations).

`"nearest_train_rmsd"` is the median over traces of the RMSD to the closest
training window after optimal superposition (Kabsch 1976, Acta Cryst.
A32:922): near 0 means the traces copy training windows, and the held-out
value shows how far a new real window is from the training set.

    python -m workshop.train.sample --workdir=runs/protein_backbone --num_samples=1000
    python -m workshop.eval.protein_backbone --workdir=runs/protein_backbone

reads `<workdir>/config.json` and `<workdir>/generated/samples.npy`, prints a
table and writes `<workdir>/generated/backbone_scores.json` and
`samples_ca.pdb` (the first 20 traces as PDB models, for PyMOL).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from workshop.core.configuration import DataConfiguration
from workshop.data import sources
from workshop.data.protein_dataset import restore_fixed_coordinates, write_ca_traces
from workshop.eval.protein_geometry import score_ca_trace

__all__ = ["compare_traces", "gaussian_baselines", "nearest_rmsd", "to_traces"]

_COLUMNS = ("ca_ca_rmsd", "ca_ca_violation_fraction", "ca_angle_outside_fraction", "clash_fraction",
            "traces_with_clash", "radius_of_gyration", "nearest_train_rmsd")


def to_traces(x: np.ndarray, data: DataConfiguration) -> np.ndarray:
    """Model inputs or samples (`[N, 3L]`, `[N, L, 3]`, or `[N, 3L - 6]` in the "first_residues" frame,
    in units of `data.protein.coordinate_scale`) -> `[N, L, 3]` Angstrom."""
    x = np.asarray(x, np.float64)
    protein = data.protein
    length = protein.sequence_length
    if protein.frame == "first_residues" and data.flatten:
        return restore_fixed_coordinates(x, length) * protein.coordinate_scale
    if x.size == 0 or x.size % (3 * length) or x.shape[-1] not in (3, 3 * length):
        raise ValueError(f"expected CA traces [N, {3 * length}] or [N, {length}, 3] "
                         f"(data.protein.sequence_length={length}), got shape {x.shape}")
    return x.reshape(len(x), length, 3) * protein.coordinate_scale


def gaussian_baselines(train: np.ndarray, num: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """`num` traces from the two Gaussian baselines fitted to `train` `[N, L, 3]` (see the module doc)."""
    rng = np.random.default_rng(seed)
    flat = train.reshape(len(train), -1)
    mean = flat.mean(0)
    diagonal = mean + flat.std(0) * rng.standard_normal((num, flat.shape[1]))
    # The covariance is singular (centred, canonically posed windows); the SVD sampler handles that.
    full = rng.multivariate_normal(mean, np.cov(flat, rowvar=False), size=num, method="svd")
    return {"gaussian_matched_scale": diagonal.reshape(-1, *train.shape[1:]),
            "gaussian_fit": full.reshape(-1, *train.shape[1:])}


def nearest_rmsd(traces: np.ndarray, reference: np.ndarray, *, chunk: int = 64) -> np.ndarray:
    """RMSD of each trace to its closest reference trace after optimal rotation and translation.

    Args:
      traces: float `[N, L, 3]`.
      reference: float `[M, L, 3]`.

    Returns:
      float64 `[N]`, Angstrom. Only proper rotations are used, so a mirror
      image of a reference trace does not count as a match.
    """
    a = traces - traces.mean(1, keepdims=True)
    b = reference - reference.mean(1, keepdims=True)
    norms_b = (b**2).sum((1, 2))
    best = []
    for start in range(0, len(a), chunk):
        part = a[start:start + chunk]
        covariance = np.einsum("nli,mlj->nmij", part, b)
        singular = np.linalg.svd(covariance, compute_uv=False)
        # Kabsch: the best proper rotation gains s1 + s2 + sign(det) s3.
        sign = np.sign(np.linalg.det(covariance))
        gain = singular[..., 0] + singular[..., 1] + sign * singular[..., 2]
        squared = (part**2).sum((1, 2))[:, None] + norms_b[None] - 2 * gain
        best.append(np.sqrt(np.maximum(squared.min(1), 0.0) / a.shape[1]))
    return np.concatenate(best)


def compare_traces(samples: np.ndarray, data: DataConfiguration, *, seed: int = 0) -> dict[str, dict[str, float]]:
    """Scores of the samples, the real windows and the baselines (see the module doc).

    Args:
      samples: a model's samples, `[N, 3L]` or `[N, L, 3]` in model units.
      data: the data configuration the model was trained on (dataset "protein").

    Returns:
      name -> `score_ca_trace` scores plus `"nearest_train_rmsd"` and `"count"`;
      names: "samples", "held_out", "train", "gaussian_matched_scale", "gaussian_fit".
    """
    if data.protein is None or data.protein.window_stride is None:
        raise ValueError(f"backbone scores need a protein dataset with data.protein.window_stride set (fixed-length "
                         f"windows); got dataset {data.dataset!r}, "
                         f"window_stride {data.protein.window_stride if data.protein else None}")
    # The real training windows, without the noisy copies a config may train on.
    clean = data.model_copy(update={"protein": data.protein.model_copy(update={"coordinate_noise": 0.0,
                                                                               "noise_copies": 1})})
    train = to_traces(sources.load_split(clean, train=True)["x"], data)
    sets = {"samples": to_traces(samples, data),
            "held_out": to_traces(sources.load_split(data, train=False)["x"], data),
            "train": train,
            **gaussian_baselines(train, len(samples), seed=seed)}
    result = {}
    for name, traces in sets.items():
        scores = score_ca_trace(traces)
        nearest = nearest_rmsd(traces, train)
        if name == "train":
            nearest = np.zeros_like(nearest)  # Each is its own nearest window.
        scores["nearest_train_rmsd"] = float(np.median(nearest))
        scores["count"] = len(traces)
        result[name] = scores
    return result


def format_table(result: dict[str, dict[str, float]]) -> str:
    """The scores as an aligned text table, one row per set."""
    header = f"{'set':<24s}{'count':>7s}" + "".join(f"{c:>27s}" for c in _COLUMNS)
    rows = [header]
    for name, scores in result.items():
        rows.append(f"{name:<24s}{scores['count']:>7d}" + "".join(f"{scores[c]:>27.4f}" for c in _COLUMNS))
    return "\n".join(rows)


def main(argv) -> None:
    from absl import app, flags  # pylint: disable=g-import-not-at-top

    from workshop.core.paths import user_path  # pylint: disable=g-import-not-at-top

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    workdir = user_path(flags.FLAGS.workdir)
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise app.UsageError(f"{config_path} does not exist: is {workdir} a workdir written by //workshop/train:train?")
    data = DataConfiguration.model_validate(json.loads(config_path.read_text())["data"])
    samples_path = user_path(flags.FLAGS.samples) if flags.FLAGS.samples else workdir / "generated" / "samples.npy"
    if not samples_path.is_file():
        raise app.UsageError(f"{samples_path} does not exist: run //workshop/train:sample --workdir={workdir} first")
    try:
        result = compare_traces(np.load(samples_path), data, seed=flags.FLAGS.seed)
    except ValueError as err:
        raise app.UsageError(f"{samples_path}: {err}") from None
    output = pathlib.Path(samples_path).with_name("backbone_scores.json")
    output.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    traces = to_traces(np.load(samples_path), data)[:flags.FLAGS.num_pdb_models]
    finite = np.all(np.isfinite(traces), axis=(1, 2)) & (np.abs(traces).max(axis=(1, 2), initial=0.0) < 999.0)
    pdb = write_ca_traces(output.with_name("samples_ca.pdb"), traces[finite])
    print(format_table(result))
    print(f"wrote {output} and {pdb} ({int(finite.sum())} traces, one MODEL each)")


if __name__ == "__main__":
    from absl import app as _app, flags as _flags  # pylint: disable=g-import-not-at-top

    _flags.DEFINE_string("workdir", None, "A workdir of a protein backbone model.", required=True)
    _flags.DEFINE_string("samples", None, "Samples .npy (default: <workdir>/generated/samples.npy).")
    _flags.DEFINE_integer("seed", 0, "Seed of the Gaussian baselines.")
    _flags.DEFINE_integer("num_pdb_models", 20, "Samples written to samples_ca.pdb (one MODEL each).", lower_bound=0)
    _app.run(main)
