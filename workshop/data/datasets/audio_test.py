"""Tests for workshop.data.datasets.audio on FLAC/WAV/OGG fixtures written with soundfile."""

import os
import tracemalloc

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import soundfile

from workshop.data.datasets import audio
from workshop.data.idx import DatasetFormatError
from workshop.data.pipeline import BatchPipeline


def _tone(seconds, rate, freq=440.0, amplitude=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_librispeech(root, subset="dev-clean", rate=16000):
    """Two speakers, three utterances of different lengths; returns {utterance id: (audio, words)}."""
    utterances = {}
    for speaker, chapter, lengths in ((103, 1240, (0.30, 0.25)), (1034, 121119, (0.40,))):
        folder = os.path.join(root, "LibriSpeech", subset, str(speaker), str(chapter))
        os.makedirs(folder)
        lines = []
        for i, seconds in enumerate(lengths):
            utterance = f"{speaker}-{chapter}-{i:04d}"
            clip = _tone(seconds, rate, freq=200.0 * (i + 1))
            soundfile.write(os.path.join(folder, utterance + ".flac"), clip, rate, subtype="PCM_16")
            words = f"WORDS OF {speaker} NUMBER {i}"
            lines.append(f"{utterance} {words}")
            utterances[utterance] = (clip, words)
        with open(os.path.join(folder, f"{speaker}-{chapter}.trans.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return utterances


class MuLawTest(absltest.TestCase):

    def test_round_trip_within_quantization_error(self):
        x = np.random.default_rng(0).uniform(-1, 1, 10000)
        codes = audio.mu_law_encode(x)
        self.assertEqual(codes.dtype, np.int32)
        self.assertEqual((codes.min(), codes.max()), (0, 255))
        levels = audio.mu_law_decode(np.arange(256))
        # Every code decodes to a level that encodes back to itself, monotonically.
        np.testing.assert_array_equal(audio.mu_law_encode(levels), np.arange(256))
        self.assertTrue(np.all(np.diff(levels) > 0))
        # In the companded domain the error is at most half a step (1 / mu); in the
        # signal domain a sample never leaves the interval between its level's neighbours.
        decoded = audio.mu_law_decode(codes).astype(np.float64)
        compand = lambda v: np.sign(v) * np.log1p(255 * np.abs(v)) / np.log1p(255)
        self.assertLessEqual(np.abs(compand(decoded) - compand(x)).max(), 1 / 255 + 1e-6)
        gaps = np.diff(levels)
        neighbour_gap = np.maximum(gaps[np.clip(codes - 1, 0, 254)], gaps[np.clip(codes, 0, 254)])
        self.assertTrue(np.all(np.abs(decoded - x) <= neighbour_gap))
        # Known values: silence sits mid-scale, full scale at the ends; small signals get fine steps.
        np.testing.assert_array_equal(audio.mu_law_encode([-1.0, 0.0, 1.0]), [0, 128, 255])
        self.assertLess(gaps[127], 1e-3)
        self.assertGreater(gaps[-1], 0.03)


class ResampleAndCropTest(absltest.TestCase):

    def test_resample_changes_length_by_ratio_and_keeps_the_tone(self):
        tone_8k = _tone(1.0, 8000, freq=440.0)
        tone_16k = audio.resample(tone_8k, 8000, 16000)
        self.assertEqual(len(tone_16k), 16000)
        self.assertLen(audio.resample(_tone(0.5, 44100), 44100, 16000), 8000)
        middle = slice(1000, 15000)  # Away from the filter's edge effects.
        np.testing.assert_allclose(tone_16k[middle], _tone(1.0, 16000, freq=440.0)[middle], atol=2e-3)
        self.assertIs(audio.resample(tone_8k, 8000, 8000), tone_8k)

    def test_crops(self):
        x = np.arange(10, dtype=np.float32)
        np.testing.assert_array_equal(audio.fixed_length_crops(x, 4), [[0, 1, 2, 3], [4, 5, 6, 7]])
        np.testing.assert_array_equal(audio.fixed_length_crops(x[:2], 4), [[0, 1, 0, 0]])
        crop = audio.random_crop(x, 3, rng=np.random.default_rng(1))
        self.assertLen(crop, 3)
        np.testing.assert_array_equal(np.diff(crop), [1, 1])


class LibriSpeechTest(parameterized.TestCase):

    def test_layout_transcripts_and_exact_audio(self):
        root = self.create_tempdir().full_path
        utterances = _write_librispeech(root)
        dataset = audio.LibriSpeechDataset(root, sample_rate=16000, subset="dev-clean")
        self.assertEqual(dataset.utterance_ids, ["103-1240-0000", "103-1240-0001", "1034-121119-0000"])
        self.assertEqual(dataset.transcripts[0], "WORDS OF 103 NUMBER 0")
        np.testing.assert_array_equal(dataset.speaker_ids, [103, 103, 1034])
        for i, utterance in enumerate(dataset.utterance_ids):
            np.testing.assert_allclose(dataset.audio[i], utterances[utterance][0], atol=1 / 32768)
        np.testing.assert_allclose(dataset.durations, [0.30, 0.25, 0.40])
        arrays = dataset.as_arrays(crop_length=1600)
        self.assertEqual(arrays["audio"].shape, (3 + 2 + 4, 1600))
        np.testing.assert_array_equal(arrays["speaker"], [103] * 5 + [1034] * 4)
        np.testing.assert_array_equal(arrays["clip"], [0, 0, 0, 1, 1, 2, 2, 2, 2])
        np.testing.assert_array_equal(arrays["audio"][3], dataset.audio[1][:1600])
        np.testing.assert_array_equal(arrays["mu_law"], audio.mu_law_encode(arrays["audio"]))
        with BatchPipeline(arrays, batch_size=4, seed=0) as pipeline:
            self.assertEqual(next(pipeline)["mu_law"].shape, (4, 1600))

    def test_resamples_files_at_another_rate(self):
        root = self.create_tempdir().full_path
        _write_librispeech(root, subset="test-clean", rate=8000)
        dataset = audio.LibriSpeechDataset(os.path.join(root, "LibriSpeech", "test-clean"), subset="test-clean")
        np.testing.assert_array_equal(dataset.source_rates, [8000] * 3)
        self.assertEqual([len(a) for a in dataset.audio], [4800, 4000, 6400])  # 2x the 8 kHz lengths.

    def test_missing_subset_transcript_line_and_flac(self):
        root = self.create_tempdir().full_path
        with self.assertRaisesRegex(FileNotFoundError, r"(?s)subset 'dev-clean' not found.*LibriSpeech/dev-clean.*speaker>-<chapter>.trans.txt"):
            audio.LibriSpeechDataset(root, subset="dev-clean")
        _write_librispeech(root)
        chapter = os.path.join(root, "LibriSpeech", "dev-clean", "103", "1240")
        soundfile.write(os.path.join(chapter, "103-1240-0009.flac"), np.zeros(100, np.float32), 16000)
        with self.assertRaisesRegex(DatasetFormatError, r"103-1240.trans.txt: expected a line for every FLAC file; missing \['103-1240-0009.flac'\]"):
            audio.LibriSpeechDataset(root, subset="dev-clean")
        os.remove(os.path.join(chapter, "103-1240-0009.flac"))
        os.remove(os.path.join(chapter, "103-1240-0001.flac"))
        with self.assertRaisesRegex(FileNotFoundError, r"103-1240-0001.flac is listed in .*103-1240.trans.txt:2 but missing"):
            audio.LibriSpeechDataset(root, subset="dev-clean")

    def test_truncated_flac_named_or_skipped_with_count(self):
        root = self.create_tempdir().full_path
        _write_librispeech(root)
        bad = os.path.join(root, "LibriSpeech", "dev-clean", "103", "1240", "103-1240-0000.flac")
        with open(bad, "rb") as f:
            data = f.read()
        with open(bad, "wb") as f:
            f.write(data[:60])
        with self.assertRaisesRegex(DatasetFormatError, r"103-1240-0000.flac: expected a WAV, FLAC or OGG audio file"):
            audio.LibriSpeechDataset(root, subset="dev-clean")
        dataset = audio.LibriSpeechDataset(root, subset="dev-clean", skip_bad_files=True)
        self.assertEqual([str(p) for p, _ in dataset.skipped], [bad])
        self.assertEqual(dataset.utterance_ids, ["103-1240-0001", "1034-121119-0000"])
        self.assertEqual(dataset.transcripts[0], "WORDS OF 103 NUMBER 1")


def _flac_declaring(path, frames):
    """A real 4000-frame FLAC file whose STREAMINFO claims `frames` total samples (36-bit field)."""
    soundfile.write(path, _tone(0.25, 16000), 16000, subtype="PCM_16")
    with open(path, "rb") as f:
        data = bytearray(f.read())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO comes first.
    # STREAMINFO bytes 10..17: rate (20 bits), channels - 1 (3), bits - 1 (5), total samples (36).
    field = int.from_bytes(data[18:26], "big")
    field = (field & ~((1 << 36) - 1)) | frames
    data[18:26] = field.to_bytes(8, "big")
    with open(path, "wb") as f:
        f.write(data)


class EdgeCaseTest(absltest.TestCase):
    """Subset naming, repeated transcript lines and malformed files, each named and skippable."""

    def test_subset_is_the_folder_read(self):
        root = self.create_tempdir().full_path
        _write_librispeech(root, subset="dev-clean")
        folder = os.path.join(root, "LibriSpeech", "dev-clean")
        dataset = audio.LibriSpeechDataset(folder, subset=None)
        self.assertEqual(dataset.subset, "dev-clean")
        self.assertIn("LibriSpeechDataset(dev-clean, 3 utterances", repr(dataset))
        # Asking for another subset of a subset folder is refused, not mislabelled.
        with self.assertRaisesRegex(ValueError, r"dev-clean is itself the LibriSpeech subset folder 'dev-clean', but subset 'train-clean-100' was asked for"):
            audio.LibriSpeechDataset(folder)
        with self.assertRaisesRegex(FileNotFoundError, r"subset 'test-clean' not found(?s:.*)subsets found there: dev-clean"):
            audio.LibriSpeechDataset(root, subset="test-clean")

    def test_folder_with_transcripts_and_subsets_is_ambiguous(self):
        root = self.create_tempdir().full_path
        _write_librispeech(root, subset="dev-clean")
        folder = os.path.join(root, "LibriSpeech", "dev-clean")
        _write_librispeech(folder, subset="test-clean")  # dev-clean/LibriSpeech/test-clean/...
        with self.assertRaisesRegex(ValueError, r"dev-clean is ambiguous: .*\['test-clean'\]"):
            audio.LibriSpeechDataset(folder, subset=None)

    def test_repeated_line_loaded_once_with_a_warning(self):
        root = self.create_tempdir().full_path
        _write_librispeech(root)
        transcript = os.path.join(root, "LibriSpeech", "dev-clean", "103", "1240", "103-1240.trans.txt")
        with open(transcript, "a") as f:
            f.write("103-1240-0000 WORDS OF 103 NUMBER 0\n")
        with self.assertWarnsRegex(UserWarning, r"103-1240.trans.txt:3: utterance 103-1240-0000 is listed twice \(first at line 1\)"):
            dataset = audio.LibriSpeechDataset(root, subset="dev-clean")
        self.assertEqual(dataset.utterance_ids, ["103-1240-0000", "103-1240-0001", "1034-121119-0000"])
        self.assertEqual([(os.path.basename(p), u) for p, u in dataset.duplicates], [("103-1240.trans.txt", "103-1240-0000")])
        with open(transcript, "a") as f:
            f.write("103-1240-0001 OTHER WORDS\n")
        # Line 3 still warns (once, as above) before line 4 is refused.
        with self.assertRaisesRegex(DatasetFormatError, r"103-1240.trans.txt:4: utterance 103-1240-0001 is listed again with another transcript \(first at line 2\)"), \
                self.assertWarnsRegex(UserWarning, r"103-1240.trans.txt:3: utterance 103-1240-0000 is listed twice"):
            audio.LibriSpeechDataset(root, subset="dev-clean")

    def test_bad_transcripts_named_or_skipped_with_their_chapter(self):
        root = self.create_tempdir().full_path
        _write_librispeech(root)
        transcript = os.path.join(root, "LibriSpeech", "dev-clean", "103", "1240", "103-1240.trans.txt")
        with open(transcript, "rb") as f:
            data = f.read()
        with open(transcript, "wb") as f:
            f.write(data.replace(b"WORDS OF 103 NUMBER 1", b"WORDS OF 103 NUMB\xe9R 1"))  # latin-1, not UTF-8
        with self.assertRaisesRegex(DatasetFormatError, r"103-1240.trans.txt: expected a UTF-8 LibriSpeech transcript"):
            audio.LibriSpeechDataset(root, subset="dev-clean")
        dataset = audio.LibriSpeechDataset(root, subset="dev-clean", skip_bad_files=True)
        self.assertEqual([str(p) for p, _ in dataset.skipped], [transcript])
        self.assertEqual(dataset.utterance_ids, ["1034-121119-0000"])
        with open(transcript, "w") as f:
            f.write("1034-121119-0000 WORDS OF ANOTHER CHAPTER\n")
        with self.assertRaisesRegex(DatasetFormatError, r"103-1240.trans.txt:1: utterance 1034-121119-0000 is not of this folder's speaker and chapter"):
            audio.LibriSpeechDataset(root, subset="dev-clean")

    def test_absurd_declared_length_refused_before_allocating(self):
        root = self.create_tempdir().full_path
        _write_librispeech(root)
        bad = os.path.join(root, "LibriSpeech", "dev-clean", "103", "1240", "103-1240-0001.flac")
        _flac_declaring(bad, 2**36 - 1)  # 256 GiB as float32.
        with self.assertRaisesRegex(DatasetFormatError, r"103-1240-0001.flac: .*the header declares 68719476735 frames x 1 channel\(s\), more than the 1073741824 samples"):
            audio.LibriSpeechDataset(root, subset="dev-clean")
        dataset = audio.LibriSpeechDataset(root, subset="dev-clean", skip_bad_files=True)
        self.assertEqual([str(p) for p, _ in dataset.skipped], [bad])
        self.assertEqual(dataset.utterance_ids, ["103-1240-0000", "1034-121119-0000"])

    def test_undeclared_length_is_named(self):
        path = os.path.join(self.create_tempdir().full_path, "stream.flac")
        _flac_declaring(path, 0)  # FLAC's "total samples unknown"; libsndfile reports SF_COUNT_MAX frames.
        with self.assertRaisesRegex(DatasetFormatError, r"stream.flac: .*the header does not declare the number of frames"):
            audio.read_audio(path)

    def test_lying_length_under_the_cap_is_truncation_not_a_big_allocation(self):
        path = os.path.join(self.create_tempdir().full_path, "x.flac")
        _flac_declaring(path, 2**29)  # 2 GiB as float32, but 4000 frames are there.
        with self.assertRaisesRegex(DatasetFormatError, r"x.flac: expected a WAV, FLAC or OGG audio file.*; decoding failed after 0 of the 536870912 frames the header declares \(truncated or corrupt\)"):
            audio.read_audio(path)
        # numpy reports its buffers to tracemalloc: decoding in blocks allocates
        # about one block (4 MiB), never the 2 GiB the header declares.
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        with self.assertRaises(DatasetFormatError):
            audio.read_audio(path)
        self.assertLess(tracemalloc.get_traced_memory()[1], 64 * 2**20)


class AudioFolderTest(absltest.TestCase):

    def test_wav_flac_ogg_labels_and_resampling(self):
        root = self.create_tempdir().full_path
        os.makedirs(os.path.join(root, "digits"))
        stereo = np.stack([_tone(0.1, 8000), np.zeros(800, np.float32)], axis=1)
        soundfile.write(os.path.join(root, "digits", "one.wav"), stereo, 8000, subtype="PCM_16")
        soundfile.write(os.path.join(root, "digits", "two.flac"), _tone(0.2, 16000), 16000)
        soundfile.write(os.path.join(root, "hello.ogg"), _tone(0.5, 22050), 22050, format="OGG", subtype="VORBIS")
        dataset = audio.AudioFolderDataset(root, sample_rate=16000)
        self.assertEqual(dataset.class_names, (".", "digits"))
        np.testing.assert_array_equal(dataset.labels, [1, 1, 0])
        np.testing.assert_array_equal(dataset.source_rates, [8000, 16000, 22050])
        self.assertEqual([len(a) for a in dataset.audio], [1600, 3200, 8000])
        # Stereo is averaged: half the left channel's amplitude.
        self.assertAlmostEqual(float(np.abs(dataset.audio[0][200:1400]).max()), 0.25, delta=0.01)

    def test_truncated_wav_names_file(self):
        root = self.create_tempdir().full_path
        path = os.path.join(root, "x.wav")
        soundfile.write(path, _tone(0.5, 8000), 8000, subtype="PCM_16")
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        with self.assertRaisesRegex(DatasetFormatError, r"x.wav: expected a WAV, FLAC or OGG .*truncated: the header promises 8000 data bytes, the file holds 3978"):
            audio.AudioFolderDataset(root)
        with open(path, "wb") as f:
            f.write(b"RIFF\x00\x00not audio at all")
        with self.assertRaisesRegex(DatasetFormatError, r"x.wav: expected a WAV, FLAC or OGG audio file"):
            audio.AudioFolderDataset(root)

    def test_bad_files_skipped_with_count(self):
        root = self.create_tempdir().full_path
        for name in ("a.wav", "b.wav", "c.wav"):
            soundfile.write(os.path.join(root, name), _tone(0.1, 8000), 8000, subtype="PCM_16")
        with open(os.path.join(root, "b.wav"), "rb") as f:
            data = f.read()
        with open(os.path.join(root, "b.wav"), "wb") as f:
            f.write(data[: len(data) // 2])  # Truncated.
        with open(os.path.join(root, "d.flac"), "wb") as f:
            f.write(b"fLaC" + bytes(100))  # Corrupt.
        with self.assertRaisesRegex(DatasetFormatError, r"b.wav: expected a WAV, FLAC or OGG .*truncated"):
            audio.AudioFolderDataset(root, sample_rate=8000)
        dataset = audio.AudioFolderDataset(root, sample_rate=8000, skip_bad_files=True)
        self.assertEqual([os.path.basename(p) for p, _ in dataset.skipped], ["b.wav", "d.flac"])
        self.assertIn("truncated", dataset.skipped[0][1])
        self.assertEqual([os.path.basename(str(p)) for p in dataset.paths], ["a.wav", "c.wav"])
        np.testing.assert_allclose(dataset.audio[1], _tone(0.1, 8000), atol=1e-4)


_ASTERISK = "/usr/share/asterisk/sounds/en_US_f_Allison/digits"


@absltest.skipUnless(os.path.isdir(_ASTERISK), f"{_ASTERISK} is missing: apt-get install asterisk-core-sounds-en-wav")
class RealAsteriskSoundsTest(absltest.TestCase):

    def test_8khz_prompts_resampled_to_16khz(self):
        dataset = audio.AudioFolderDataset(_ASTERISK, sample_rate=16000)
        self.assertGreater(len(dataset), 20)
        self.assertTrue(np.all(dataset.source_rates == 8000))
        for path, clip in zip(dataset.paths[:3], dataset.audio[:3]):
            self.assertAlmostEqual(len(clip), 2 * soundfile.info(path).frames, delta=1)


if __name__ == "__main__":
    absltest.main()
