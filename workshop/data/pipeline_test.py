"""Tests for workshop.data.pipeline: determinism, coverage, resumption, binarization."""

import itertools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from workshop.data.pipeline import BatchPipeline, model_input


def _source(n=10, shape=(4, 4, 1), seed=0):
    """`n` random grey images, labels `i % 3`, and `"index"` = the example index."""
    rng = np.random.default_rng(seed)
    return {
        "x": rng.integers(0, 256, size=(n, *shape), dtype=np.uint8),
        "label": (np.arange(n) % 3).astype(np.int64),
        "index": np.arange(n),
    }


def _take(pipeline, count):
    return list(itertools.islice(pipeline, count))


def _epoch_indices(batches):
    return np.concatenate([b["index"] for b in batches])


def _assert_batches_equal(test, expected, actual):
    test.assertEqual(len(expected), len(actual))
    for e, a in zip(expected, actual):
        test.assertEqual(e.keys(), a.keys())
        for key in e:
            np.testing.assert_array_equal(e[key], a[key], err_msg=key)


class BatchContentTest(parameterized.TestCase):

    def test_image_is_float_grey_over_255_and_labels_int32(self):
        source = _source()
        batch = next(BatchPipeline(source, batch_size=4, seed=3))
        self.assertEqual(batch["x"].dtype, np.float32)
        self.assertEqual(batch["x"].shape, (4, 4, 4, 1))
        np.testing.assert_array_equal(batch["x"], source["x"][batch["index"]] / np.float32(255))
        self.assertEqual(batch["label"].dtype, np.int32)
        np.testing.assert_array_equal(batch["label"], batch["index"] % 3)

    def test_same_seed_same_batches_other_seed_other_order(self):
        source = _source(n=30)
        first = _take(BatchPipeline(source, batch_size=4, seed=7), 20)
        again = _take(BatchPipeline(source, batch_size=4, seed=7), 20)
        other = _take(BatchPipeline(source, batch_size=4, seed=8), 20)
        _assert_batches_equal(self, first, again)
        self.assertFalse(np.array_equal(_epoch_indices(first), _epoch_indices(other)))

    @parameterized.parameters(True, False)
    def test_every_example_once_per_epoch_and_epochs_differ(self, drop_remainder):
        n, batch_size = 10, 4
        pipeline = BatchPipeline(_source(n), batch_size=batch_size, drop_remainder=drop_remainder, num_epochs=3)
        self.assertEqual(pipeline.steps_per_epoch, 2 if drop_remainder else 3)
        batches = list(pipeline)
        self.assertLen(batches, 3 * pipeline.steps_per_epoch)
        epochs = [
            _epoch_indices(batches[e * pipeline.steps_per_epoch : (e + 1) * pipeline.steps_per_epoch])
            for e in range(3)
        ]
        for order in epochs:
            self.assertLen(np.unique(order), 8 if drop_remainder else n)
            if not drop_remainder:
                np.testing.assert_array_equal(np.sort(order), np.arange(n))
        self.assertFalse(np.array_equal(epochs[0], epochs[1]))
        self.assertFalse(np.array_equal(epochs[1], epochs[2]))

    def test_epoch_order_is_the_permutation_of_seed_and_epoch(self):
        pipeline = BatchPipeline(_source(12), batch_size=4, seed=5, num_epochs=2)
        order = _epoch_indices(list(pipeline)[3:])  # Epoch 1.
        np.testing.assert_array_equal(order, np.random.default_rng([5, 1]).permutation(12))

    def test_evaluation_covers_all_in_order_with_partial_last_batch(self):
        source = _source(n=10)
        batches = list(BatchPipeline.for_evaluation(source, batch_size=4))
        self.assertEqual([len(b["label"]) for b in batches], [4, 4, 2])
        np.testing.assert_array_equal(_epoch_indices(batches), np.arange(10))
        images = np.concatenate([b["x"] for b in batches])
        np.testing.assert_array_equal(images, source["x"] / np.float32(255))

    def test_batches_are_copies_not_views_of_the_source(self):
        source = _source()
        batch = next(BatchPipeline.for_evaluation(source, batch_size=4))
        batch["index"][0] = 99
        self.assertEqual(source["index"][0], 0)
        batch = next(BatchPipeline(source, batch_size=4, shuffle=False, image_dtype="uint8"))
        batch["x"][0] = 7
        self.assertFalse((source["x"][0] == 7).all())

    @parameterized.product(binarize=["none", "dynamic", "fixed"], shuffle=[True, False])
    def test_uint8_batches_become_the_float_batches_on_the_device(self, binarize, shuffle):
        source = _source(n=12)
        floats = _take(BatchPipeline(source, batch_size=4, seed=5, binarize=binarize, shuffle=shuffle), 6)
        grey = _take(BatchPipeline(source, batch_size=4, seed=5, binarize=binarize, shuffle=shuffle,
                                   image_dtype="uint8"), 6)
        to_float = jax.jit(model_input)
        for f, g in zip(floats, grey):
            self.assertEqual(g["x"].dtype, np.uint8)
            if binarize != "none":
                self.assertTrue(np.isin(g["x"], [0, 255]).all())
            on_device = to_float(jnp.asarray(g["x"]))
            self.assertEqual(on_device.dtype, jnp.float32)
            np.testing.assert_array_equal(np.asarray(on_device), f["x"])  # bit for bit
            np.testing.assert_array_equal(model_input(g["x"]), f["x"])
            np.testing.assert_array_equal(g["index"], f["index"])

    @parameterized.named_parameters(
        ("ragged", {"x": np.zeros((3, 2, 2, 1), np.uint8), "label": np.zeros(4)}, {}, "leading dim"),
        ("batch_too_big", _source(3), {}, "batch_size 4 > 3 examples"),
        ("binarize_name", _source(), {"binarize": "random"}, "binarize 'random' is unknown; known: none"),
        ("binarize_float", {"x": np.zeros((8, 2, 2, 1), np.float32)}, {"binarize": "dynamic"}, "uint8"),
        ("negative_seed", _source(), {"seed": -1}, "seed"),
        ("image_dtype", _source(), {"image_dtype": "float16"}, "image_dtype 'float16' is unknown; known: float32"),
    )
    def test_bad_settings_are_refused(self, source, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            BatchPipeline(source, batch_size=4, **kwargs)


class ResumeTest(parameterized.TestCase):

    @parameterized.product(start=[0, 1, 3, 5, 8], prefetch=[0, 2], binarize=["none", "dynamic"])
    def test_resume_from_step_k_equals_uninterrupted_stream(self, start, prefetch, binarize):
        source = _source(n=11)
        settings = dict(batch_size=4, seed=1, num_epochs=4, binarize=binarize)
        uninterrupted = list(BatchPipeline(source, prefetch=0, **settings))
        resumed = list(BatchPipeline(source, prefetch=prefetch, start_step=start, **settings))
        _assert_batches_equal(self, uninterrupted[start:], resumed)

    def test_state_counts_handed_out_batches_and_restores(self):
        source = _source(n=11)
        pipeline = BatchPipeline(source, batch_size=3, seed=2, prefetch=3)
        _take(pipeline, 5)
        state = pipeline.state()
        self.assertEqual(state, {"step": 5})  # Not counting the prefetched ones.
        expected = _take(pipeline, 6)
        pipeline.close()

        restored = BatchPipeline(source, batch_size=3, seed=2, prefetch=3)
        restored.set_state(state)
        _assert_batches_equal(self, expected, _take(restored, 6))
        self.assertEqual(restored.state(), {"step": 11})
        restored.close()

    def test_prefetch_changes_nothing_and_exhaustion_is_final(self):
        source = _source(n=9)
        plain = list(BatchPipeline(source, batch_size=2, num_epochs=2, prefetch=0, drop_remainder=False))
        pipeline = BatchPipeline(source, batch_size=2, num_epochs=2, prefetch=4, drop_remainder=False)
        _assert_batches_equal(self, plain, list(pipeline))
        self.assertEqual(list(pipeline), [])
        self.assertEqual(pipeline.state(), {"step": 10})

    def test_batch_at_step_is_a_pure_function(self):
        pipeline = BatchPipeline(_source(n=9), batch_size=2, seed=4, num_epochs=3, binarize="dynamic")
        later = pipeline.batch(9)
        _take(pipeline, 5)
        _assert_batches_equal(self, [later], [pipeline.batch(9)])
        with self.assertRaises(IndexError):
            pipeline.batch(pipeline.num_steps)


class ShardTest(parameterized.TestCase):
    """`shard_index`/`shard_count`: each process's rows of the one-process batch sequence."""

    @parameterized.product(shard_count=[2, 4], binarize=["none", "dynamic", "fixed"], start=[0, 5])
    def test_shards_concatenate_to_the_one_process_batch_at_every_step(self, shard_count, binarize, start):
        source = _source(n=26, shape=(4, 4, 1))
        settings = dict(batch_size=8, seed=3, num_epochs=4, binarize=binarize)  # 3 steps an epoch, 2 rows left out
        whole = list(BatchPipeline(source, prefetch=0, **settings))
        shards = [
            list(BatchPipeline(source, prefetch=2, start_step=start, shard_index=p, shard_count=shard_count,
                               **settings))
            for p in range(shard_count)
        ]
        for p in range(shard_count):
            self.assertLen(shards[p], len(whole) - start)
            self.assertEqual(BatchPipeline(source, shard_index=p, shard_count=shard_count, **settings)
                             .local_batch_size, 8 // shard_count)
            self.assertEqual(shards[p][0]["x"].shape, (8 // shard_count, 4, 4, 1))
        joined = [{key: np.concatenate([shard[i][key] for shard in shards]) for key in whole[0]}
                  for i in range(len(whole) - start)]
        _assert_batches_equal(self, whole[start:], joined)

    def test_resumed_shard_equals_the_uninterrupted_shard(self):
        source = _source(n=20)
        settings = dict(batch_size=6, seed=1, binarize="dynamic", shard_index=1, shard_count=3)
        pipeline = BatchPipeline(source, **settings)
        _take(pipeline, 4)
        state = pipeline.state()
        self.assertEqual(state, {"step": 4})  # the global step: the same on every shard
        expected = _take(pipeline, 7)
        pipeline.close()
        _assert_batches_equal(self, expected, _take(BatchPipeline(source, start_step=4, **settings), 7))

    def test_shards_of_a_partial_last_batch(self):
        source = _source(n=10)  # batches of 4, 4, 2
        whole = list(BatchPipeline.for_evaluation(source, batch_size=4))
        halves = [list(BatchPipeline(source, batch_size=4, shuffle=False, drop_remainder=False, num_epochs=1,
                                     shard_index=p, shard_count=2)) for p in range(2)]
        self.assertEqual([len(b["index"]) for b in halves[1]], [2, 2, 1])
        np.testing.assert_array_equal(np.concatenate([halves[0][2]["index"], halves[1][2]["index"]]),
                                      whole[2]["index"])

    @parameterized.named_parameters(
        ("batch_not_divisible", {"batch_size": 6, "shard_count": 4},
         "a batch of 6 examples cannot be split into shard_count=4 equal shards.*multiple of 4, e.g. 4 or 8"),
        ("last_batch_not_divisible", {"batch_size": 4, "shard_count": 4, "drop_remainder": False},
         "a batch of 2 examples cannot be split into shard_count=4.*drop_remainder=True"),
        ("index_too_big", {"batch_size": 4, "shard_index": 2, "shard_count": 2}, r"shard_index must be in 0..1"),
        ("no_shards", {"batch_size": 4, "shard_count": 0}, "shard_count must be a positive integer"),
    )
    def test_bad_shards_are_refused(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            BatchPipeline(_source(n=10), **kwargs)


class BinarizeTest(parameterized.TestCase):

    @parameterized.parameters("dynamic", "fixed")
    def test_values_are_bits_with_the_grey_level_mean(self, mode):
        source = _source(n=64, shape=(16, 16, 1))
        batches = list(BatchPipeline(source, batch_size=16, binarize=mode, num_epochs=1))
        images = np.concatenate([b["x"] for b in batches])
        self.assertEqual(images.dtype, np.float32)
        self.assertTrue(np.all((images == 0) | (images == 1)))
        grey = source["x"][_epoch_indices(batches)]
        # 16384 Bernoulli draws: the standard error of the mean is below 0.004.
        self.assertAlmostEqual(images.mean(), grey.mean() / 255, delta=0.015)
        # Black stays 0 and white stays 1, whatever the draw.
        self.assertTrue(np.all(images[grey == 0] == 0))
        self.assertTrue(np.all(images[grey == 255] == 1))

    def test_dynamic_per_pixel_frequency_matches_grey_level(self):
        grey = np.array([[0, 51, 128, 204, 255]], np.uint8).reshape(1, 1, 5, 1)
        source = {"x": np.repeat(grey, 400, axis=0)}
        images = np.concatenate([b["x"] for b in BatchPipeline(source, batch_size=100, num_epochs=1, binarize="dynamic")])
        # 400 draws per grey level: standard error at most 0.025.
        np.testing.assert_allclose(images.mean(axis=0).ravel(), grey.ravel() / 255, atol=0.08)

    @parameterized.parameters(True, False)
    def test_dynamic_redraws_each_epoch_fixed_does_not(self, shuffle):
        source = _source(n=12, shape=(8, 8, 1))

        def by_example(mode, epoch):
            pipeline = BatchPipeline(source, batch_size=4, seed=0, binarize=mode, num_epochs=2, shuffle=shuffle)
            batches = list(pipeline)[3 * epoch : 3 * (epoch + 1)]
            images = np.concatenate([b["x"] for b in batches])
            return images[np.argsort(_epoch_indices(batches))]

        np.testing.assert_array_equal(by_example("fixed", 0), by_example("fixed", 1))
        self.assertFalse(np.array_equal(by_example("dynamic", 0), by_example("dynamic", 1)))

    def test_fixed_bits_do_not_depend_on_shuffle_or_batch_size(self):
        source = _source(n=10, shape=(8, 8, 1))
        in_order = np.concatenate(
            [b["x"] for b in BatchPipeline.for_evaluation(source, batch_size=3, seed=9, binarize="fixed")]
        )
        batches = list(BatchPipeline(source, batch_size=5, seed=9, binarize="fixed", num_epochs=1))
        shuffled = np.concatenate([b["x"] for b in batches])
        np.testing.assert_array_equal(shuffled, in_order[_epoch_indices(batches)])

    def test_dynamic_bits_do_not_depend_on_batch_size(self):
        source = _source(n=10, shape=(8, 8, 1))

        def epoch_images(batch_size):
            pipeline = BatchPipeline(
                source, batch_size=batch_size, seed=3, binarize="dynamic", num_epochs=1, drop_remainder=False
            )
            return np.concatenate([b["x"] for b in pipeline])

        np.testing.assert_array_equal(epoch_images(3), epoch_images(7))

    def test_seeds_give_different_bits(self):
        source = _source(n=8, shape=(8, 8, 1))
        a = BatchPipeline.for_evaluation(source, batch_size=8, seed=0, binarize="fixed").batch(0)
        b = BatchPipeline.for_evaluation(source, batch_size=8, seed=1, binarize="fixed").batch(0)
        self.assertFalse(np.array_equal(a["x"], b["x"]))


if __name__ == "__main__":
    absltest.main()
