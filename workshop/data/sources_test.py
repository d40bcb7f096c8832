"""Tests of `load_split`: each modality's arrays, held-out splits and config errors."""

import os
import pathlib
import tempfile

import numpy as np
import pydantic
import soundfile
from absl.testing import absltest

from workshop.core import dataset_registry
from workshop.core.configuration import DataConfiguration
from workshop.data import sources
from workshop.data.pipeline import BatchPipeline


def _pdb_chain(path: str, num_residues: int, offset: float) -> None:
    """A PDB file with one chain of ideal-ish backbone atoms (N, CA, C, O) along x."""
    lines, serial = [], 1
    for i in range(num_residues):
        for name, dx in (("N", 0.0), ("CA", 1.46), ("C", 2.0), ("O", 2.5)):
            x, y, z = 3.8 * i + dx + offset, 0.3 * (name == "O"), 0.0
            lines.append(
                f"ATOM  {serial:5d} {name:<4s} ALA A{i + 1:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00           {name[0]}"
            )
            serial += 1
    lines.append("END")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _librispeech_subset(folder: str, speakers: dict[int, int], seed: int) -> None:
    """`folder/<speaker>/<chapter>/` with one 0.2 s FLAC utterance (PCM_16, 8 kHz) per chapter; `speakers` speaker -> chapters."""
    rng = np.random.default_rng(seed)
    for speaker, chapters in speakers.items():
        for chapter in range(chapters):
            chapter_dir = os.path.join(folder, str(speaker), str(chapter))
            os.makedirs(chapter_dir)
            utterance = f"{speaker}-{chapter}-0000"
            soundfile.write(os.path.join(chapter_dir, utterance + ".flac"), rng.uniform(-0.5, 0.5, 1600), 8000,
                            subtype="PCM_16")
            with open(os.path.join(chapter_dir, f"{speaker}-{chapter}.trans.txt"), "w") as f:
                f.write(f"{utterance} HELLO FROM {speaker}\n")


def _with(data: DataConfiguration, section: str, **changes) -> DataConfiguration:
    """`data` with some fields of its section `section` changed."""
    return data.model_copy(update={section: getattr(data, section).model_copy(update=changes)})


class LibriSpeechSplitTest(absltest.TestCase):
    """The test split is never the training data, whatever data_dir points at."""

    def _config(self, data_dir, test_fraction=0.05, **audio):
        return DataConfiguration(dataset="librispeech", data_dir=data_dir, test_fraction=test_fraction,
                                 audio=dict(sequence_length=400, sample_rate=8000, quantization_channels=None, **audio))

    def test_one_subset_folder_holds_out_whole_speakers(self):
        folder = os.path.join(self.create_tempdir().full_path, "LibriSpeech", "dev-clean")
        _librispeech_subset(folder, {19: 2, 84: 1, 251: 1, 422: 1}, seed=0)
        data = self._config(folder, test_fraction=0.25)
        with self.assertLogs(sources._log, "WARNING") as logs:  # pylint: disable=protected-access
            train = sources.load_split(data, train=True)
        self.assertRegex(logs.output[0], r"dev-clean is the single subset 'dev-clean' .*last 1 of 4 speakers by id \(422\)")
        test = sources.load_split(data, train=False)
        # 4 crops of 400 samples per 0.2 s utterance: speakers 19 (2 chapters), 84, 251 train; 422 is held out.
        self.assertEqual((len(train["x"]), len(test["x"])), (16, 4))
        self.assertEqual(set(train["label"]), {19, 84, 251})
        np.testing.assert_array_equal(test["label"], [422] * 4)
        self.assertFalse({r.tobytes() for r in train["x"]} & {r.tobytes() for r in test["x"]})

    def test_one_speaker_is_split_by_chapter(self):
        folder = os.path.join(self.create_tempdir().full_path, "dev-other")
        _librispeech_subset(folder, {7: 3}, seed=1)
        data = self._config(folder, test_fraction=0.3)
        train, test = sources.load_split(data, train=True), sources.load_split(data, train=False)
        self.assertEqual((len(train["x"]), len(test["x"])), (8, 4))
        self.assertFalse({r.tobytes() for r in train["x"]} & {r.tobytes() for r in test["x"]})

    def test_two_subsets_are_read_as_named(self):
        root = self.create_tempdir().full_path
        _librispeech_subset(os.path.join(root, "LibriSpeech", "dev-clean"), {1: 1, 2: 1}, seed=2)
        _librispeech_subset(os.path.join(root, "LibriSpeech", "test-clean"), {3: 1}, seed=3)
        data = self._config(root, subset="dev-clean", test_subset="test-clean")
        self.assertEqual(set(sources.load_split(data, train=True)["label"]), {1, 2})
        self.assertEqual(set(sources.load_split(data, train=False)["label"]), {3})
        with self.assertRaisesRegex(FileNotFoundError, r"subset 'train-clean-100' not found(?s:.*)subsets found there: dev-clean, test-clean"):
            sources.load_split(self._config(root), train=True)

    def test_same_subset_for_both_splits_is_refused(self):
        root = self.create_tempdir().full_path
        _librispeech_subset(os.path.join(root, "LibriSpeech", "dev-clean"), {1: 1, 2: 1}, seed=4)
        data = self._config(root, subset="dev-clean", test_subset="dev-clean")
        for train in (True, False):
            with self.assertRaisesRegex(ValueError, r"data.audio.subset and data.audio.test_subset are both 'dev-clean': the test split would be the training data"):
                sources.load_split(data, train=train)
        os.symlink(os.path.join(root, "LibriSpeech", "dev-clean"), os.path.join(root, "LibriSpeech", "test-clean"))
        with self.assertRaisesRegex(ValueError, r"'dev-clean' and data.audio.test_subset 'test-clean' are the same folder"):
            sources.load_split(self._config(root, subset="dev-clean"), train=False)


class LoadSplitTest(absltest.TestCase):

    def setUp(self):
        super().setUp()
        # Tokenizers trained on the fixtures are cached here, not in ~/.cache.
        self.enter_context(absltest.mock.patch.dict(os.environ, {sources.TOKENIZER_CACHE_ENV: self.create_tempdir().full_path}))

    def test_text_rows_are_int32_ids_and_splits_are_disjoint(self):
        root = self.create_tempdir().full_path
        for i in range(20):
            with open(os.path.join(root, f"doc{i:02d}.txt"), "w") as f:
                f.write(f"Document number {i} says hello to the world. " * 20)
        data = DataConfiguration(dataset="text", data_dir=root, text=dict(sequence_length=16, vocab_size=300),
                                 test_fraction=0.1)
        train, test = sources.load_split(data, train=True), sources.load_split(data, train=False)
        self.assertEqual(train["x"].dtype, np.int32)
        self.assertEqual(train["x"].shape[1], 16)
        n = len(train["x"]) + len(test["x"])
        self.assertEqual(len(test["x"]), int(np.ceil(0.1 * n)))
        self.assertLess(train["x"].max(), 300)
        batch = next(iter(BatchPipeline(train, batch_size=4, seed=0)))
        self.assertEqual(batch["x"].dtype, np.int32)  # Ids are not cast to float.
        rows = {tuple(row) for row in train["x"]}
        self.assertTrue(all(tuple(row) in rows for row in batch["x"]))  # Whole rows, ids intact.
        self.assertFalse(rows & {tuple(row) for row in test["x"]})

    def test_audio_folder_is_split_by_file_and_mu_law_coded(self):
        root = self.create_tempdir().full_path
        rng = np.random.default_rng(0)
        for i in range(4):
            soundfile.write(os.path.join(root, f"clip{i}.wav"), rng.uniform(-0.5, 0.5, 8000 + 1000 * i), 8000)
        data = DataConfiguration(dataset="audio_folder", data_dir=root, audio=dict(sequence_length=1000, sample_rate=8000),
                                 test_fraction=0.25)
        train, test = sources.load_split(data, train=True), sources.load_split(data, train=False)
        self.assertEqual(train["x"].dtype, np.int32)
        self.assertEqual(train["x"].shape[1:], (1000,))
        # Files 0-2 (8, 9, 10 crops) train; file 3 (11 crops) is held out whole.
        self.assertEqual((len(train["x"]), len(test["x"])), (27, 11))
        self.assertTrue(((train["x"] >= 0) & (train["x"] < 256)).all())
        waveform = sources.load_split(_with(data, "audio", quantization_channels=None), train=True)
        self.assertEqual(waveform["x"].dtype, np.float32)

    def test_text_tokenizer_is_cached_by_corpus_and_encodes_prompts(self):
        root = self.create_tempdir().full_path
        docs = [f"Section {i}: the quick brown fox jumps over {i} lazy dogs. " * 8 for i in range(6)]
        for i, doc in enumerate(docs):
            with open(os.path.join(root, f"doc{i}.txt"), "w") as f:
                f.write(doc)
        data = DataConfiguration(dataset="text", data_dir=root, text=dict(sequence_length=12, vocab_size=300))
        sources.load_split(data, train=True)
        path = sources.tokenizer_file(data)
        self.assertTrue(path.is_file())
        self.assertEqual(path.parent, pathlib.Path(os.environ[sources.TOKENIZER_CACHE_ENV]) / "tokenizers")
        # An edited corpus gets another tokenizer; an explicit path wins.
        with open(os.path.join(root, "doc0.txt"), "a") as f:
            f.write("more")
        self.assertNotEqual(sources.tokenizer_file(data), path)
        explicit = _with(data, "text", tokenizer_path=str(path))
        self.assertEqual(sources.tokenizer_file(explicit), path)
        with self.assertRaisesRegex(ValueError, r"has 300 entries, more than data.text.vocab_size=280"):
            sources.load_split(_with(explicit, "text", vocab_size=280), train=True)
        with self.assertRaisesRegex(FileNotFoundError, "tokenizer .* not found"):
            sources.run_tokenizer(_with(explicit, "text", tokenizer_path=str(path.with_name("x.json"))))
        # A prompt is encoded with the same tokenizer: its ids decode back to the text.
        prompt = sources.encode_text_prompt(explicit, "the quick brown fox")
        self.assertEqual(prompt.dtype, np.int32)
        self.assertGreater(len(prompt), 0)
        self.assertEqual(sources.run_tokenizer(explicit).decode(prompt.tolist()), "the quick brown fox")
        with self.assertRaisesRegex(ValueError, "encodes to no tokens"):
            sources.encode_text_prompt(explicit, "")
        with self.assertRaisesRegex(ValueError, r"a text prompt needs a text dataset .*'fashion_mnist' is not \(its modality: image\)"):
            sources.encode_text_prompt(DataConfiguration(dataset="fashion_mnist"), "hello")

    def test_protein_gives_ca_coordinates_with_a_mask(self):
        root = self.create_tempdir().full_path
        for i, length in enumerate((5, 7, 6)):
            _pdb_chain(os.path.join(root, f"chain{i}.pdb"), length, offset=10.0 * i)
        data = DataConfiguration(dataset="protein", data_dir=root, protein=dict(sequence_length=8), test_fraction=0.3)
        train, test = sources.load_split(data, train=True), sources.load_split(data, train=False)
        self.assertEqual(train["x"].shape, (2, 8, 3))
        self.assertEqual(test["x"].shape, (1, 8, 3))
        np.testing.assert_array_equal(train["mask"].sum(axis=1), [5, 7])
        # Centred CA positions, consecutive CAs 3.8 A apart.
        ca = train["x"][0, :5]
        np.testing.assert_allclose(ca.mean(axis=0), 0.0, atol=1e-4)
        np.testing.assert_allclose(np.linalg.norm(np.diff(ca, axis=0), axis=1), 3.8, atol=1e-3)
        np.testing.assert_array_equal(train["x"][0, 5:], 0.0)

    def test_file_datasets_need_a_folder_and_a_length(self):
        with self.assertRaisesRegex(pydantic.ValidationError, r"'text' reads local files: set data.data_dir"):
            DataConfiguration(dataset="text", text=dict(sequence_length=8))
        with self.assertRaisesRegex(pydantic.ValidationError, r"'librispeech' needs data.audio.sequence_length"):
            DataConfiguration(dataset="librispeech", data_dir="/tmp")
        with self.assertRaisesRegex(pydantic.ValidationError,
                                    r"data.image.binarize='dynamic' is set, but data.dataset 'audio_folder' is an audio dataset"):
            DataConfiguration(dataset="audio_folder", data_dir="/tmp", audio=dict(sequence_length=4),
                              image=dict(binarize="dynamic"))

    def test_a_missing_folder_names_it(self):
        missing = os.path.join(tempfile.gettempdir(), "no-such-corpus-folder")
        data = DataConfiguration(dataset="text", data_dir=missing, text=dict(sequence_length=8))
        with self.assertRaisesRegex(FileNotFoundError, "no-such-corpus-folder"):
            sources.load_split(data, train=True)

    def test_held_out_count(self):
        self.assertEqual(sources.held_out_count(100, 0.05, what="rows"), 5)
        self.assertEqual(sources.held_out_count(3, 0.01, what="rows"), 1)
        self.assertEqual(sources.held_out_count(2, 0.9, what="rows"), 1)
        with self.assertRaisesRegex(ValueError, "rows: 1 found"):
            sources.held_out_count(1, 0.1, what="rows")



class RegisteredDatasetTest(absltest.TestCase):
    """A dataset registered here, not in sources.py, is read by load_split like a built-in one."""

    def setUp(self):
        super().setUp()
        self.tiles = np.random.default_rng(0).integers(0, 256, size=(10, 4, 4, 1), dtype=np.uint8)
        self.calls = []

        def load_tiles(data: DataConfiguration, train: bool) -> dict[str, np.ndarray]:
            self.calls.append((data.dataset, train))
            rows = slice(0, 8) if train else slice(8, None)
            return {"x": self.tiles[rows], "label": np.arange(10)[rows]}

        dataset_registry.register_dataset("test-tiles", modality="image", loader=load_tiles)
        self.addCleanup(dataset_registry.unregister_dataset, "test-tiles")

    def test_load_split_reads_it_through_its_loader(self):
        data = DataConfiguration(dataset="test-tiles", image={"binarize": "dynamic"}, flatten=True)
        train, test = sources.load_split(data, train=True), sources.load_split(data, train=False)
        self.assertEqual(self.calls, [("test-tiles", True), ("test-tiles", False)])
        np.testing.assert_array_equal(train["x"], self.tiles[:8].reshape(8, 16))  # flatten applies to it too
        np.testing.assert_array_equal(test["label"], [8, 9])
        batch = next(iter(BatchPipeline(train, batch_size=8, seed=0, binarize=data.binarize, prefetch=0)))
        self.assertEqual(set(np.unique(batch["x"])), {0.0, 1.0})
        # Bernoulli(grey / 255): dark pixels come out 0 far more often than bright ones.
        grey = self.tiles[:8].reshape(8, 16).astype(float) / 255  # rows in label order
        ones = batch["x"][np.argsort(batch["label"])]
        self.assertGreater(ones[grey > 0.8].mean(), ones[grey < 0.2].mean() + 0.4)

    def test_a_loader_without_x_or_with_ragged_arrays_is_named(self):
        dataset_registry.register_dataset("test-broken", modality="vector", loader=lambda data, train: {"y": np.zeros(3)})
        self.addCleanup(dataset_registry.unregister_dataset, "test-broken")
        with self.assertRaisesRegex(ValueError, r"the loader of data.dataset 'test-broken' returned \['y'\], without "
                                                r"the model input 'x'"):
            sources.load_split(DataConfiguration(dataset="test-broken"), train=True)
        dataset_registry.unregister_dataset("test-broken")
        dataset_registry.register_dataset("test-broken", modality="vector",
                                          loader=lambda data, train: {"x": np.zeros((3, 2)), "label": np.zeros(2)})
        with self.assertRaisesRegex(ValueError, r"returned arrays of different lengths \{'x': 3, 'label': 2\}"):
            sources.load_split(DataConfiguration(dataset="test-broken"), train=True)

    def test_the_built_in_datasets_are_registered_with_their_loaders(self):
        self.assertEqual(dataset_registry.registered_datasets("audio"), ["audio_folder", "librispeech"])
        self.assertEqual(dataset_registry.dataset_spec("wikipedia").loader, "workshop.data.sources:load_wikipedia")
        for name in dataset_registry.registered_datasets():
            loader = dataset_registry.dataset_spec(name).loader
            if isinstance(loader, str) and loader.startswith("workshop.data.sources:"):
                self.assertTrue(callable(getattr(sources, loader.partition(":")[2])), loader)
        two_moons = sources.load_split(DataConfiguration(dataset="two_moons"), train=True)
        self.assertEqual((two_moons["x"].dtype, two_moons["x"].shape[1]), (np.float32, 2))


if __name__ == "__main__":
    absltest.main()
