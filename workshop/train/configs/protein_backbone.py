"""A masked autoregressive flow over protein CA traces: 16 consecutive residues, flattened to 48 numbers.

Data (`workshop.data.sources`, dataset "protein"): the PDB files Debian's
pymol-data ships under /usr/share/pymol/data (1TII, IL-2, a peptide and 1HPV,
whose pre-1996 layout `protein_dataset` reads up to column 72; the two
non-protein files there are skipped and counted). Chains are cut into
windows of 16 consecutive residues with every CA present and no chain break,
one starting at every residue (`protein.window_stride=1`); the last 2 of the 11
chains (test_fraction 0.15: 1HPV chains A and B, HIV-1 protease, a fold not
in the training chains) are held out. Each window is centred and turned onto
its principal axes (a canonical pose, so the flow need not learn rotation
invariance; chirality is kept), given in nm (`protein.coordinate_scale=10` Angstrom)
and flattened to `[48]`. The training split is 16 copies of each window with
0.5 A of Gaussian noise (`protein.coordinate_noise`): without it the flows fitted
the thin shells of the data (consecutive CAs 3.80 +- 0.02 A apart) and
their inverse blew up between training windows.

Model: MAF (Papamakarios et al. 2017, arXiv:1705.07057), five MADE affine
layers (256-256) with the order reversed between them.

    tools/bazel run //workshop/train:train -- --config=workshop/train/configs/protein_backbone.py \\
        --workdir=runs/protein_backbone
    tools/bazel run //workshop/train:sample -- --workdir=runs/protein_backbone --num_samples=1000
    python -m workshop.eval.protein_backbone --workdir=runs/protein_backbone

The last command scores the samples (`workshop.eval.protein_geometry.score_ca_trace`:
consecutive CA-CA distances against 3.80 A, CA-CA-CA angles outside
[80, 150] degrees, non-neighbouring CAs closer than 3.8 A) next to the
held-out windows and two Gaussian baselines fitted to the training windows.
Results (geometry scores against held-out windows and Gaussian baselines):
BENCHMARKS.md, "The other families".
"""

import ml_collections

from workshop.train.configs import with_defaults

_LENGTH = 16


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "protein_backbone"
    config.model = dict(
        model_type="maf",
        input_shape=(3 * _LENGTH,),
        num_flows=5,
        parameters=dict(hidden_features=[256, 256]),
    )
    config.training = dict(
        num_steps=2000,
        seed=0,
        optimizer=dict(name="adam", learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=100,
                       final_lr_fraction=0.05, grad_clip_norm=10.0),
        ema_decay=0.99,
        log_every=100,
        eval_every=500,
        eval_batches=1,
        checkpoint_every=1000,
        keep_checkpoints=2,
        sample_every=None,
        num_samples=64,
    )
    config.data = dict(
        dataset="protein",
        data_dir="/usr/share/pymol/data",
        protein=dict(sequence_length=_LENGTH, window_stride=1, frame="principal_axes", coordinate_scale=10.0,
                     coordinate_noise=0.5, noise_copies=16),
        flatten=True,
        test_fraction=0.15,
        skip_bad_files=True,
        batch_size=64,
        eval_batch_size=500,
    )
    config.eval = dict(likelihood_samples=1)
    return with_defaults(config)
