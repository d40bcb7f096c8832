"""WaveNet on 8 kHz English speech prompts: Debian's asterisk-core-sounds-en-wav.

van den Oord et al. 2016, "WaveNet: A Generative Model for Raw Audio"
(arXiv:1609.03499): two blocks of kernel-2 dilated causal convolutions
(dilations 1..128, a receptive field of 511 samples, 64 ms at 8 kHz), gated
tanh x sigmoid units, residual and skip connections, and a 256-way softmax
over mu-law codes (ITU-T G.711, mu = 255).

Data ("audio_folder"): the 568 WAV prompts of one speaker ("Allison") under
`/usr/share/asterisk/sounds/en_US_f_Allison` (8 kHz, 16-bit, ~26 minutes),
cut into crops of 2048 samples (256 ms) and mu-law coded; the last 5% of the
files (in path order) are held out, so no prompt has crops in both splits.
Test-set bits per sample = nats per sample / ln 2 = `nll_bits_per_dim` of
final_metrics.json (8 would be a uniform model over the 256 codes).

    tools/bazel run //workshop/train:train -- \
        --config=$PWD/workshop/train/configs/wavenet_audio.py --workdir=/tmp/wavenet_audio
    tools/bazel run //workshop/train:sample -- --workdir=/tmp/wavenet_audio --num_samples=4

The sample binary writes `generated/sample_000.wav`, ... (2048 samples each,
16-bit PCM at 8 kHz) besides `samples.npy` (the mu-law codes).

Results: BENCHMARKS.md, "The other families".
"""

import ml_collections

from workshop.train.configs import with_defaults

_SPEECH = "/usr/share/asterisk/sounds/en_US_f_Allison"
_SAMPLE_RATE = 8000
_CROP = 2048


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "wavenet_audio"
    config.model = dict(
        model_type="wavenet",
        input_shape=(_CROP,),
        parameters=dict(num_levels=256, input_format="mu_law_codes", num_blocks=2, layers_per_block=8,
                        residual_channels=32, dilation_channels=32, skip_channels=64),
    )
    config.training = dict(
        num_steps=600,
        seed=0,
        optimizer=dict(name="adam", learning_rate=2e-3, schedule="warmup_cosine", warmup_steps=50,
                       final_lr_fraction=0.05, grad_clip_norm=1.0),
        ema_decay=0.99,
        log_every=50,
        eval_every=300,
        eval_batches=2,
        checkpoint_every=300,
        keep_checkpoints=2,
        sample_every=None,  # once, at the end (2048 sequential steps)
        num_samples=4,
    )
    config.data = dict(dataset="audio_folder", data_dir=_SPEECH,
                       audio=dict(sequence_length=_CROP, sample_rate=_SAMPLE_RATE, quantization_channels=256),
                       batch_size=8, eval_batch_size=32, test_fraction=0.05)
    config.eval = dict(final_eval=True)
    return with_defaults(config)
