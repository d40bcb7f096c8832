"""Speech and other audio read from LibriSpeech or a folder of WAV/FLAC/OGG files.

LibriSpeech: Panayotov, Chen, Povey & Khudanpur (2015), "LibriSpeech: an ASR
corpus based on public domain audio books" (ICASSP; https://openslr.org/12).
16 kHz mono FLAC utterances with transcripts, unpacked as

    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt

where each transcript line is `<speaker>-<chapter>-<utt> WORDS IN CAPITALS`.
`LibriSpeechDataset.subset` is the name of the folder actually read. A
transcript listing an utterance twice with the same words loads it once (a
warning names the file and id); with different words it is malformed.

Files are decoded with libsndfile (`soundfile`), mixed down to mono float32 in
[-1, 1] and, when a file's rate differs from `sample_rate`, resampled with
libsoxr (`soxr`, "HQ"): the length changes by the rate ratio. For WaveNet (van
den Oord et al., 2016, "WaveNet: A Generative Model for Raw Audio",
arXiv:1609.03499) `mu_law_encode` quantizes to 256 classes with the ITU-T G.711
mu-law companding curve and `mu_law_decode` inverts it. Clips have different
lengths; `as_arrays(crop_length)` cuts them into fixed-length crops for
`BatchPipeline`.

Every malformed file raises `DatasetFormatError` naming it (with
`skip_bad_files`, it is left out and listed in `skipped`; a bad transcript
leaves out its chapter). A header declaring more than `MAX_AUDIO_SAMPLES`
samples is refused before anything is allocated, and files are decoded in
blocks, so a header that lies about its length costs no more memory than the
audio the file really holds.
"""

from __future__ import annotations

import os
import pathlib
import re
import warnings
from collections.abc import Sequence

import numpy as np
import soundfile
import soxr

from workshop.data.idx import DatasetFormatError

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioFolderDataset",
    "LibriSpeechDataset",
    "MAX_AUDIO_SAMPLES",
    "find_librispeech_subset",
    "is_librispeech_subset",
    "fixed_length_crops",
    "mu_law_decode",
    "mu_law_encode",
    "random_crop",
    "read_audio",
    "resample",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
_AUDIO_FORMAT = "expected a WAV, FLAC or OGG audio file readable by libsndfile"
# 2^30 samples (4 GiB as float32; 6.8 hours of 44.1 kHz stereo): no clip of a
# training set is longer, and a header declaring more is corrupt or hostile.
MAX_AUDIO_SAMPLES = 2**30
_BLOCK_FRAMES = 2**20
_SHORT_DATA_CHUNK = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decodes one audio file to mono float32.

    Returns:
      `(audio, rate)`: float32 `[T]` in [-1, 1] (channels averaged) and the
      file's sample rate in Hz.

    Raises:
      FileNotFoundError: no such file.
      DatasetFormatError: unreadable, corrupt, or holding fewer frames than its
        header promises (truncated); the message names the file and format.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path} ({_AUDIO_FORMAT})")
    blocks, info = [], None
    try:
        info = soundfile.info(path)
        if info.frames >= 2**63 - 1:  # SF_COUNT_MAX: the header leaves the length open (a streamed FLAC).
            raise DatasetFormatError(
                f"{path}: {_AUDIO_FORMAT}; the header does not declare the number of frames, which libsndfile "
                "cannot read back; re-encode the file (e.g. `flac --force <file>`)"
            )
        if info.frames * info.channels > MAX_AUDIO_SAMPLES:
            raise DatasetFormatError(
                f"{path}: {_AUDIO_FORMAT}; the header declares {info.frames} frames x {info.channels} channel(s), "
                f"more than the {MAX_AUDIO_SAMPLES} samples a clip may hold (corrupt header?)"
            )
        with soundfile.SoundFile(path) as f:
            rate = f.samplerate
            while True:  # In blocks: memory follows the audio decoded, not the length the header declares.
                block = f.read(frames=_BLOCK_FRAMES, dtype="float32", always_2d=True)
                blocks.append(block)
                if len(block) < _BLOCK_FRAMES:
                    break
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OverflowError, MemoryError) as e:
        if isinstance(e, DatasetFormatError):
            raise
        where = ""
        if info is not None:  # The header was read; decoding failed (e.g. fewer frames than it declares).
            where = f"decoding failed after {sum(len(b) for b in blocks)} of the {info.frames} frames the header declares (truncated or corrupt): "
        raise DatasetFormatError(f"{path}: {_AUDIO_FORMAT}; {where}{e}") from e
    audio = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    # libsndfile reads a truncated WAV/AIFF silently and logs the shortfall of its data chunk.
    short = _SHORT_DATA_CHUNK.search(info.extra_info or "")
    if short:
        raise DatasetFormatError(
            f"{path}: {_AUDIO_FORMAT}; truncated: the header promises {short.group(1)} data bytes, "
            f"the file holds {short.group(2)}"
        )
    if info.frames > 0 and len(audio) < info.frames:
        raise DatasetFormatError(
            f"{path}: {_AUDIO_FORMAT}; truncated: the header promises {info.frames} frames, the file holds {len(audio)}"
        )
    if len(audio) == 0:
        raise DatasetFormatError(f"{path}: {_AUDIO_FORMAT}; the file holds no audio frames")
    return audio.mean(axis=1, dtype=np.float32), int(rate)


def resample(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Resamples float `[T]` from `rate` to `target_rate` Hz (libsoxr, high quality).

    Returns:
      float32 `[round(T * target_rate / rate)]`; `audio` itself when the rates agree.
    """
    if rate == target_rate:
        return audio
    return soxr.resample(np.asarray(audio, np.float32), rate, target_rate, quality="HQ").astype(np.float32)


def mu_law_encode(audio: np.ndarray, quantization_channels: int = 256) -> np.ndarray:
    """Mu-law companding and quantization (ITU-T G.711; WaveNet, section 2.2).

    Args:
      audio: float `[...]` in [-1, 1] (values outside are clipped).
      quantization_channels: the number of classes, mu + 1.

    Returns:
      int32 `[...]` classes in `0 .. quantization_channels - 1`.
    """
    mu = quantization_channels - 1
    x = np.clip(np.asarray(audio, np.float64), -1.0, 1.0)
    companded = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return np.floor((companded + 1.0) / 2.0 * mu + 0.5).astype(np.int32)


def mu_law_decode(codes: np.ndarray, quantization_channels: int = 256) -> np.ndarray:
    """Inverts `mu_law_encode`: int `[...]` classes -> float32 `[...]` in [-1, 1]."""
    mu = quantization_channels - 1
    companded = 2.0 * np.asarray(codes, np.float64) / mu - 1.0
    return (np.sign(companded) * np.expm1(np.abs(companded) * np.log1p(mu)) / mu).astype(np.float32)


def fixed_length_crops(audio: np.ndarray, length: int) -> np.ndarray:
    """Consecutive non-overlapping crops of `audio` `[T]`: float32 `[max(1, T // length), length]`.

    The tail shorter than `length` is dropped; a clip shorter than `length` is
    zero-padded at the end into one crop.
    """
    if len(audio) < length:
        return np.pad(audio, (0, length - len(audio)))[np.newaxis].astype(np.float32)
    count = len(audio) // length
    return np.asarray(audio[: count * length], np.float32).reshape(count, length)


def random_crop(audio: np.ndarray, length: int, *, rng: np.random.Generator) -> np.ndarray:
    """A crop of `length` samples at a uniform random offset (zero-padded if `audio` is shorter)."""
    if len(audio) <= length:
        return np.pad(audio, (0, length - len(audio))).astype(np.float32)
    start = int(rng.integers(0, len(audio) - length + 1))
    return np.asarray(audio[start:start + length], np.float32)


class _AudioClips:
    """Decoded clips at one rate. Subclasses fill `paths` then call `_load`.

    Attributes:
      audio: one float32 `[T_i]` array per clip, at `sample_rate`.
      sample_rate: the rate of every clip, in Hz.
      source_rates: int32 `[N]`, each file's own rate before resampling.
      paths: the file of each clip.
      skipped: `(path, problem)` of each bad file left out (`skip_bad_files=True`).
    """

    def _load(self, candidates: Sequence[pathlib.Path], sample_rate: int, skip_bad_files: bool) -> list[int]:
        """Decodes `candidates`; returns the indices of those kept."""
        self.sample_rate = sample_rate
        self.audio, self.paths, self.skipped, rates, kept = [], [], [], [], []
        for index, path in enumerate(candidates):
            try:
                audio, rate = read_audio(path)
            except (FileNotFoundError, DatasetFormatError) as e:
                if not skip_bad_files:
                    raise
                self.skipped.append((path, str(e)))
                continue
            self.audio.append(resample(audio, rate, sample_rate))
            self.paths.append(path)
            rates.append(rate)
            kept.append(index)
        self.source_rates = np.asarray(rates, np.int32)
        return kept

    @property
    def durations(self) -> np.ndarray:
        """float64 `[N]`, the length of each clip in seconds."""
        return np.array([len(a) for a in self.audio]) / self.sample_rate

    def __len__(self) -> int:
        return len(self.audio)

    def _crop_arrays(self, crop_length: int, per_clip: dict[str, np.ndarray], quantization_channels: int | None) -> dict[str, np.ndarray]:
        crops = [fixed_length_crops(a, crop_length) for a in self.audio]
        counts = np.array([len(c) for c in crops])
        arrays = {"audio": np.concatenate(crops), "clip": np.repeat(np.arange(len(crops), dtype=np.int32), counts)}
        arrays.update({key: np.repeat(values, counts) for key, values in per_clip.items()})
        if quantization_channels:
            arrays["mu_law"] = mu_law_encode(arrays["audio"], quantization_channels)
        return arrays


def is_librispeech_subset(folder: str | os.PathLike) -> bool:
    """Whether `folder` is itself a subset folder: it holds `<speaker>/<chapter>/*.trans.txt`."""
    folder = pathlib.Path(folder)
    return folder.is_dir() and any(folder.glob("*/*/*.trans.txt"))


def _subsets_under(root: pathlib.Path) -> list[str]:
    """The names of the subset folders in `root` and `root/LibriSpeech`."""
    found = set()
    for parent in (root, root / "LibriSpeech"):
        if parent.is_dir():
            found.update(c.name for c in parent.iterdir() if is_librispeech_subset(c))
    return sorted(found)


def find_librispeech_subset(root: str | os.PathLike, subset: str | None) -> pathlib.Path:
    """The folder of `subset` under `root`.

    Args:
      root: the folder holding `LibriSpeech/<subset>` or `<subset>`, or a subset folder itself.
      subset: e.g. "dev-clean"; None: `root` must be a subset folder.

    Returns:
      `root/LibriSpeech/<subset>` or `root/<subset>`, whichever holds
      transcripts; else `root` when it is a subset folder named `subset` (or
      `subset` is None).

    Raises:
      FileNotFoundError: no such subset; the message lists the paths tried and the subsets found.
      ValueError: `root` is the subset folder of another subset: reading it as
        `subset` would mislabel it (and could make a test split of training data);
        or `root` holds both transcripts and subset folders (ambiguous).
    """
    root = pathlib.Path(root)
    if subset is not None:
        for candidate in (root / "LibriSpeech" / subset, root / subset):
            if is_librispeech_subset(candidate):
                return candidate
    if is_librispeech_subset(root):
        nested = _subsets_under(root)
        if nested:
            raise ValueError(
                f"{root} is ambiguous: it holds <speaker>/<chapter> transcripts itself and the subset folders "
                f"{nested}; move one of them, so that it is either one subset or a folder of subsets"
            )
        if subset is None or root.name == subset:
            return root
        raise ValueError(
            f"{root} is itself the LibriSpeech subset folder {root.name!r}, but subset {subset!r} was asked for; "
            f"pass subset={root.name!r} (or None) to read it, or point root at the folder holding {subset!r}"
        )
    found = _subsets_under(root)
    tried = [root] if subset is None else [root / "LibriSpeech" / subset, root / subset, root]
    raise FileNotFoundError(
        f"LibriSpeech subset {subset!r} not found; tried:\n  " + "\n  ".join(map(str, tried))
        + f"\nsubsets found there: {', '.join(found) or 'none'}"
        + "\nExpected <subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt with its .flac files "
        "(unpack the OpenSLR tarball; nothing is downloaded)"
    )


def _read_transcript(transcript_path: pathlib.Path) -> tuple[list[tuple[pathlib.Path, str, str, int, int]], list[str]]:
    """The utterances one `<speaker>-<chapter>.trans.txt` lists, checked against its folder.

    Returns:
      `([(flac path, utterance id, words, speaker, chapter)], [duplicated ids])`.

    Raises:
      DatasetFormatError: not UTF-8, a malformed line, an id of another
        chapter, one id with two different transcripts, or a FLAC file of the
        folder without a line.
      FileNotFoundError: a listed FLAC file is missing.
    """
    chapter_dir = transcript_path.parent
    expected_prefix = f"{chapter_dir.parent.name}-{chapter_dir.name}-"
    try:
        text = transcript_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatasetFormatError(f"{transcript_path}: expected a UTF-8 LibriSpeech transcript; {e}") from e
    entries, first_line, duplicates = {}, {}, []
    for line_number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        utterance, _, words = line.strip().partition(" ")
        parts = utterance.split("-")
        if len(parts) != 3 or not all(p.isdigit() for p in parts) or not words.strip():
            raise DatasetFormatError(
                f"{transcript_path}:{line_number}: expected '<speaker>-<chapter>-<utterance> TRANSCRIPT', "
                f"found {line[:60]!r}"
            )
        words = words.strip()
        if not utterance.startswith(expected_prefix):
            raise DatasetFormatError(
                f"{transcript_path}:{line_number}: utterance {utterance} is not of this folder's speaker and "
                f"chapter (expected ids starting {expected_prefix!r})"
            )
        if utterance in entries:
            if entries[utterance][2] != words:
                raise DatasetFormatError(
                    f"{transcript_path}:{line_number}: utterance {utterance} is listed again with another "
                    f"transcript (first at line {first_line[utterance]}); which one is right is unknown"
                )
            warnings.warn(
                f"{transcript_path}:{line_number}: utterance {utterance} is listed twice (first at line "
                f"{first_line[utterance]}); it is loaded once",
                stacklevel=3,
            )
            duplicates.append(utterance)
            continue
        flac = chapter_dir / f"{utterance}.flac"
        if not flac.is_file():
            raise FileNotFoundError(f"{flac} is listed in {transcript_path}:{line_number} but missing")
        entries[utterance] = (flac, utterance, words, int(parts[0]), int(parts[1]))
        first_line[utterance] = line_number
    listed = {e[0].name for e in entries.values()}
    unlisted = sorted(p.name for p in chapter_dir.glob("*.flac") if p.name not in listed)
    if unlisted:
        raise DatasetFormatError(f"{transcript_path}: expected a line for every FLAC file; missing {unlisted[:5]}")
    return list(entries.values()), duplicates


class LibriSpeechDataset(_AudioClips):
    """LibriSpeech utterances with transcripts and speaker ids.

    Attributes (besides `_AudioClips`'):
      utterance_ids: e.g. "103-1240-0000", one per clip.
      transcripts: the transcript of each clip.
      speaker_ids, chapter_ids: int32 `[N]`, LibriSpeech's own numbers.
      data_dir: the subset folder read.
      subset: its name (`data_dir.name`), e.g. "dev-clean".
      duplicates: `(transcript, utterance id)` of each repeated line left out.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        sample_rate: int = 16000,
        subset: str | None = "train-clean-100",
        *,
        skip_bad_files: bool = False,
    ):
        """Reads and decodes every utterance of `subset`.

        Args:
          root: the folder holding `LibriSpeech/<subset>`, or `<subset>`, or the subset folder.
          sample_rate: the output rate; files at another rate are resampled.
          subset: e.g. "train-clean-100", "dev-clean", "test-other"; None when
            `root` is the subset folder, whatever its name.
          skip_bad_files: leave out unreadable audio files and chapters whose
            transcript is malformed (listed in `skipped`).

        Raises:
          FileNotFoundError: no subset folder, or a transcript names a missing FLAC file.
          ValueError: `root` is the folder of a subset other than `subset`.
          DatasetFormatError: a malformed transcript (not UTF-8, a bad line, one
            utterance with two transcripts), a FLAC file with no transcript
            line, or an unreadable FLAC file (unless skipped).
        """
        self.data_dir = find_librispeech_subset(root, subset)
        self.subset = self.data_dir.name
        entries = []  # (path, utterance id, transcript, speaker, chapter)
        self.duplicates: list[tuple[pathlib.Path, str]] = []
        bad_transcripts = []
        for transcript_path in sorted(self.data_dir.glob("*/*/*.trans.txt")):
            try:
                chapter, duplicates = _read_transcript(transcript_path)
            except (FileNotFoundError, DatasetFormatError) as e:
                if not skip_bad_files:
                    raise
                bad_transcripts.append((transcript_path, str(e)))
                continue
            entries.extend(chapter)
            self.duplicates.extend((transcript_path, u) for u in duplicates)
        if not entries:
            raise FileNotFoundError(f"no utterances under {self.data_dir}" + (f"; bad transcripts: {bad_transcripts}" if bad_transcripts else ""))
        kept = self._load([e[0] for e in entries], sample_rate, skip_bad_files)
        self.skipped = bad_transcripts + self.skipped
        entries = [entries[i] for i in kept]
        self.utterance_ids = [e[1] for e in entries]
        self.transcripts = [e[2] for e in entries]
        self.speaker_ids = np.array([e[3] for e in entries], np.int32)
        self.chapter_ids = np.array([e[4] for e in entries], np.int32)

    def __getitem__(self, index: int) -> dict:
        """`{"audio": float32 [T], "transcript": str, "speaker": int32 []}` of utterance `index`."""
        return {"audio": self.audio[index], "transcript": self.transcripts[index], "speaker": self.speaker_ids[index]}

    def as_arrays(self, crop_length: int, quantization_channels: int | None = 256) -> dict[str, np.ndarray]:
        """Fixed-length crops of every utterance, for `BatchPipeline`.

        Returns:
          `{"audio": float32 [K, crop_length], "mu_law": int32 [K, crop_length]`
          (if `quantization_channels`), `"clip": int32 [K]` (utterance index),
          `"speaker": int32 [K]}`.
        """
        return self._crop_arrays(crop_length, {"speaker": self.speaker_ids}, quantization_channels)

    def __repr__(self) -> str:
        return f"LibriSpeechDataset({self.subset}, {len(self)} utterances at {self.sample_rate} Hz from {self.data_dir})"


class AudioFolderDataset(_AudioClips):
    """Every WAV/FLAC/OGG file under a folder; the first-level subfolder is the label.

    Attributes (besides `_AudioClips`'):
      labels: int32 `[N]`, the index of each file's first-level subfolder in
        `class_names` ("." for files directly in `root`).
      class_names: sorted.
    """

    def __init__(self, root: str | os.PathLike, sample_rate: int = 16000, *, skip_bad_files: bool = False):
        """Decodes every audio file under `root` (recursively), resampled to `sample_rate`.

        Raises:
          FileNotFoundError: `root` is missing or holds no audio file.
          DatasetFormatError: a file is unreadable or truncated (unless skipped).
        """
        self.data_dir = pathlib.Path(root)
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"audio folder not found: {self.data_dir} (expected {', '.join(AUDIO_EXTENSIONS)} files)")
        candidates = sorted(p for p in self.data_dir.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
        if not candidates:
            raise FileNotFoundError(f"no {', '.join(AUDIO_EXTENSIONS)} files under {self.data_dir}")
        self._load(candidates, sample_rate, skip_bad_files)
        folders = [p.relative_to(self.data_dir).parts[0] if len(p.relative_to(self.data_dir).parts) > 1 else "." for p in self.paths]
        self.class_names = tuple(sorted(set(folders)))
        self.labels = np.array([self.class_names.index(f) for f in folders], np.int32)

    def __getitem__(self, index: int) -> dict:
        """`{"audio": float32 [T], "label": int32 []}` of file `index`."""
        return {"audio": self.audio[index], "label": self.labels[index]}

    def as_arrays(self, crop_length: int, quantization_channels: int | None = 256) -> dict[str, np.ndarray]:
        """Fixed-length crops of every file: `"audio"`, `"mu_law"`, `"clip"`, `"label"` as in LibriSpeech's."""
        return self._crop_arrays(crop_length, {"label": self.labels}, quantization_channels)

    def __repr__(self) -> str:
        return f"AudioFolderDataset({len(self)} files at {self.sample_rate} Hz from {self.data_dir})"
