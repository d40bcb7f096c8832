"""A BPE-level decoder-only Transformer on English prose: the Python 3.11 documentation.

Radford et al. 2019 (GPT-2): pre-layer-norm causal self-attention blocks
over byte-level BPE tokens (Sennrich et al. 2016, arXiv:1508.07909). The
corpus is the reStructuredText sources of Debian's python3.11-doc package
(`/usr/share/doc/python3.11/html/_sources`, 497 `*.rst.txt` files, 12 MB),
every file one document, packed into rows of 128 tokens with
`<|endoftext|>` between documents; the last 5% of the rows (the last
documents in path order) are the held-out split.

The tokenizer (4096 entries) is trained on the corpus by the first run and
saved in `$WORKSHOP_CACHE_DIR/tokenizers/` (default `~/.cache/workshop`),
under a name derived from the corpus (see
`workshop.data.sources.tokenizer_file`); later runs and the sample binary
reuse it, and `samples.txt` holds decoded text. Set
`--config.data.text.tokenizer_path=<file>` to keep it elsewhere.

    tools/bazel run //workshop/train:train -- \
        --config=$PWD/workshop/train/configs/transformer_text.py --workdir=/tmp/transformer_text
    tools/bazel run //workshop/train:sample -- --workdir=/tmp/transformer_text --num_samples=4

Held-out perplexity is exp(nats per token) = 2 ** nll_bits_per_dim of the
final evaluation (final_metrics.json; training logs report each batch's
`perplexity`).

Results: BENCHMARKS.md, "The other families".
"""

import ml_collections

from workshop.train.configs import with_defaults

_CORPUS = "/usr/share/doc/python3.11/html/_sources"
_VOCAB_SIZE = 4096
_SEQUENCE_LENGTH = 128


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "transformer_text"
    config.model = dict(
        model_type="transformer",
        input_shape=(_SEQUENCE_LENGTH,),
        parameters=dict(vocab_size=_VOCAB_SIZE, num_layers=4, num_heads=4, embed_dim=128, positions="rotary",
                        dropout_rate=0.0),
    )
    config.training = dict(
        num_steps=400,
        seed=0,
        optimizer=dict(name="adamw", learning_rate=2e-3, schedule="warmup_cosine", warmup_steps=40,
                       final_lr_fraction=0.1, weight_decay=0.01, grad_clip_norm=1.0),
        ema_decay=0.99,
        log_every=50,
        eval_every=200,
        eval_batches=2,
        checkpoint_every=200,
        keep_checkpoints=2,
        sample_every=None,  # once, at the end
        num_samples=4,
    )
    config.data = dict(dataset="text", data_dir=_CORPUS, text=dict(sequence_length=_SEQUENCE_LENGTH, vocab_size=_VOCAB_SIZE),
                       batch_size=32, eval_batch_size=256, test_fraction=0.05)
    config.eval = dict(final_eval=True)
    return with_defaults(config)
