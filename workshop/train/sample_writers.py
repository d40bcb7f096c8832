"""The sample binary's writers of samples in their own medium: text files and WAV audio.

Image samples go to a PNG grid and `samples.npy` (`workshop.train.sampling`);
a model of text also gets its samples decoded with the run's BPE tokenizer
(`workshop.data.sources.run_tokenizer`), a model of audio one 16-bit WAV file
per sample (soundfile), mu-law codes decoded first.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import soundfile

from workshop.core.configuration import DataConfiguration
from workshop.data import sources
from workshop.data.datasets.audio import mu_law_decode

__all__ = ["write_decoded_samples"]


def write_decoded_samples(data: DataConfiguration, samples: np.ndarray,
                          output_dir: str | os.PathLike) -> dict[str, pathlib.Path]:
    """Writes samples of a text or audio model in their own medium; other datasets write nothing.

    Args:
      data: the data configuration the model was trained on.
      samples: text: int token ids `[N, T]`; audio: int mu-law codes `[N, T]`
        (`data.audio.quantization_channels` levels) or float waveforms in [-1, 1].
      output_dir: an existing folder.

    Returns:
      `{"txt": <output_dir>/samples.txt}` (each sample under a `=== sample i ===`
      line, document separators shown as `<|endoftext|>`), or
      `{"wav_0": <output_dir>/sample_000.wav, ...}` (16-bit PCM at
      `data.audio.sample_rate`), or `{}`.

    Raises:
      FileNotFoundError: a text dataset whose tokenizer file is missing.
    """
    output_dir = pathlib.Path(output_dir)
    samples = np.asarray(samples)
    if data.modality == "text":
        tokenizer = sources.run_tokenizer(data)
        texts = tokenizer.decode_batch([[int(i) for i in row] for row in samples.reshape(len(samples), -1)],
                                       skip_special_tokens=False)
        target = output_dir / "samples.txt"
        target.write_text("".join(f"=== sample {i} ===\n{text}\n\n" for i, text in enumerate(texts)), encoding="utf-8")
        return {"txt": target}
    if data.modality == "audio":
        if np.issubdtype(samples.dtype, np.integer):
            if not data.audio.quantization_channels:
                raise ValueError("integer audio samples need data.audio.quantization_channels (their mu-law levels)")
            samples = mu_law_decode(samples, data.audio.quantization_channels)
        waves = np.clip(samples.reshape(len(samples), -1).astype(np.float32), -1.0, 1.0)
        paths = {}
        for i, wave in enumerate(waves):
            paths[f"wav_{i}"] = output_dir / f"sample_{i:03d}.wav"
            soundfile.write(paths[f"wav_{i}"], wave, data.audio.sample_rate, subtype="PCM_16")
        return paths
    return {}
