"""Tests for workshop.data.datasets.cifar on batches written in the official formats."""

import os
import pickle
import pickletools
import struct

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from workshop.data.datasets import cifar
from workshop.data.datasets import image
from workshop.data.idx import DatasetFormatError


class _Python2Pickler(pickle._Pickler):  # pylint: disable=protected-access
    """Writes bytes as Python 2 `str` opcodes, as cPickle did for the official batches."""

    dispatch = dict(pickle._Pickler.dispatch)  # pylint: disable=protected-access

    def _save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _python2_pickle(obj) -> bytes:
    buffer = __import__("io").BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    # The official files name numpy's reconstructor by its pre-2.0 module.
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def _random_split(n, seed, num_classes=10):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, size=n)
    return images, labels


def _planar(images):
    """uint8 [n, 32, 32, 3] -> the official [n, 3072] rows (R plane, G plane, B plane)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))


def _write_cifar10_py(root, sizes=(3, 2, 2, 1, 2), test_size=4):
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    all_images, all_labels = [], []
    names = [f"data_batch_{i + 1}" for i in range(len(sizes))] + ["test_batch"]
    for seed, (name, n) in enumerate(zip(names, list(sizes) + [test_size])):
        images, labels = _random_split(n, seed)
        batch = {
            b"batch_label": b"training batch",
            b"labels": [int(x) for x in labels],
            b"data": _planar(images),
            b"filenames": [b"img_%d.png" % i for i in range(n)],
        }
        with open(os.path.join(folder, name), "wb") as f:
            f.write(_python2_pickle(batch))
        all_images.append(images)
        all_labels.append(labels)
    return all_images, all_labels


class PickleTest(absltest.TestCase):

    def test_fixture_has_the_globals_of_the_official_files(self):
        data = _python2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]})
        globals_named = {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
        self.assertEqual(globals_named, {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"})

    def test_malicious_pickle_is_refused_not_executed(self):
        root = self.create_tempdir().full_path
        marker = os.path.join(root, "pwned")

        class Exploit:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        path = os.path.join(root, "data_batch_1")
        with open(path, "wb") as f:
            pickle.dump({"data": Exploit()}, f, protocol=2)
        with self.assertRaisesRegex(DatasetFormatError, r"data_batch_1: expected a CIFAR python batch.*global posix.system is not allowed"):
            cifar.load_cifar_pickle(path)
        self.assertFalse(os.path.exists(marker))

    def test_builtins_eval_is_refused(self):
        payload = b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R."
        with self.assertRaisesRegex(pickle.UnpicklingError, "builtins.eval is not allowed"):
            cifar.RestrictedUnpickler(__import__("io").BytesIO(payload)).load()

    def test_truncated_pickle_names_file_and_format(self):
        root = self.create_tempdir().full_path
        _write_cifar10_py(root)
        path = os.path.join(root, "cifar-10-batches-py", "data_batch_2")
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        with self.assertRaisesRegex(DatasetFormatError, r"data_batch_2: expected a CIFAR python batch.*truncated"):
            image.CIFAR10Dataset(root)


def _global_call(module: str, name: str, *args) -> bytes:
    """A protocol-2 pickle calling `module.name(*args)`, built opcode by opcode."""
    out = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n("
    for arg in args:
        out += pickle.dumps(arg, protocol=2)[2:-1]  # the argument's opcodes, without PROTO and STOP
    return out + b"tR."


class Python3PickleTest(parameterized.TestCase):
    """Batches written by people's own conversion scripts with Python 3's pickle."""

    @parameterized.product(protocol=[2, 3, 4, 5], as_lists=[False, True], str_keys=[False, True])
    def test_python3_batches_load_exactly(self, protocol, as_lists, str_keys):
        root = self.create_tempdir().full_path
        folder = os.path.join(root, "cifar-10-batches-py")
        os.makedirs(folder)
        images, labels = _random_split(3, seed=7)
        data = _planar(images)
        batch = {
            b"data": data.tolist() if as_lists else data,
            b"labels": [int(x) for x in labels] if as_lists else labels.astype(np.int64),
            b"batch_label": b"testing batch 1 of 1",
            b"filenames": [b"", b"a.png", b"b\xff.png"],
        }
        if str_keys:
            batch = {k.decode(): v for k, v in batch.items()}
        with open(os.path.join(folder, "test_batch"), "wb") as f:
            pickle.dump(batch, f, protocol=protocol)
        loaded = cifar.load_cifar_pickle(os.path.join(folder, "test_batch"))
        self.assertEqual(loaded[b"filenames"], [b"", b"a.png", b"b\xff.png"])
        dataset = cifar.CIFAR10Dataset(root, train=False)
        self.assertEqual(dataset.images.dtype, np.uint8)
        np.testing.assert_array_equal(dataset.images, images)
        np.testing.assert_array_equal(dataset.labels, labels)

    def test_python3_protocols_name_the_globals_allowed(self):
        names = set()
        for protocol in (2, 5):
            data = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"e": b""}, protocol=protocol)
            strings = [arg for op, arg, _ in pickletools.genops(data) if op.name in ("GLOBAL", "SHORT_BINUNICODE")]
            names.update(strings)
        self.assertIn("_codecs encode", names)  # protocol 2: bytes as encode(str, 'latin1')
        self.assertIn("_frombuffer", names)  # protocol 5: numpy._core.numeric._frombuffer

    @parameterized.named_parameters(
        ("os_system", "os", "system", "true"),
        ("posix_system", "posix", "system", "true"),
        ("builtins_eval", "builtins", "eval", "1+1"),
        ("builtins_exec", "builtins", "exec", "x=1"),
        ("py2_builtin_eval", "__builtin__", "eval", "1+1"),
        ("builtins_getattr", "builtins", "getattr", 1, "real"),
        ("builtins_open", "builtins", "open", "/etc/hostname"),
        ("builtins_import", "builtins", "__import__", "os"),
        ("numpy_runstring", "numpy.testing._private.utils", "runstring", "x=1", {}),
        ("numpy_load", "numpy", "load", "/dev/zero"),
        ("subprocess", "subprocess", "Popen", ["true"]),
        ("codecs_decode", "_codecs", "decode", b"x", "latin1"),
        ("copyreg", "copyreg", "_reconstructor", object, object, None),
    )
    def test_code_executing_globals_are_refused(self, module, name, *args):
        args = tuple(a for a in args if a is not object)  # classes cannot be pickled without a global
        payload = _global_call(module, name, *args)
        with self.assertRaisesRegex(pickle.UnpicklingError, f"global {module}.{name} is not allowed"):
            cifar.RestrictedUnpickler(__import__("io").BytesIO(payload)).load()

    @parameterized.named_parameters(
        # `_codecs.encode` is admitted only as pickle writes bytes: (str, 'latin1').
        ("codec_other_than_latin1", ("_codecs", "encode", "eJwDAAAAAAE=", "base64"), "_codecs.encode is allowed only"),
        ("codec_on_bytes", ("_codecs", "encode", b"x", "zlib"), "_codecs.encode is allowed only"),
        # `bytes(n)` would allocate n bytes; only `bytes()` (b'') is admitted.
        ("bytes_with_size", ("builtins", "bytes", 2**40), "bytes is allowed only with no arguments"),
        ("py2_bytes_with_text", ("__builtin__", "bytes", "x", "rot13"), "bytes is allowed only with no arguments"),
    )
    def test_allowed_globals_refuse_other_arguments(self, call, message):
        root = self.create_tempdir().full_path
        path = os.path.join(root, "data_batch_1")
        with open(path, "wb") as f:
            f.write(_global_call(*call))
        with self.assertRaisesRegex(DatasetFormatError, f"data_batch_1: .*{message}"):
            cifar.load_cifar_pickle(path)

    def test_protocol5_malicious_stack_global_is_refused(self):
        marker = os.path.join(self.create_tempdir().full_path, "pwned")

        class Exploit:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        payload = pickle.dumps({"data": Exploit()}, protocol=5)
        with self.assertRaisesRegex(pickle.UnpicklingError, r"global posix.system is not allowed"):
            cifar.RestrictedUnpickler(__import__("io").BytesIO(payload)).load()
        self.assertFalse(os.path.exists(marker))


class LabelRangeTest(parameterized.TestCase):
    """Labels are range-checked as stored, before the cast to int32 could wrap them."""

    @parameterized.parameters(2**32 + 3, 2**40, -(2**32) + 1, 2**70, -1, 10)
    def test_out_of_range_label_is_refused_not_wrapped(self, bad):
        root = self.create_tempdir().full_path
        folder = os.path.join(root, "cifar-10-batches-py")
        os.makedirs(folder)
        images, labels = _random_split(3, seed=8)
        batch = {b"data": _planar(images), b"labels": [int(labels[0]), bad, int(labels[2])]}
        with open(os.path.join(folder, "test_batch"), "wb") as f:
            f.write(_python2_pickle(batch))
        with self.assertRaisesRegex(DatasetFormatError, rf"test_batch: expected b'labels' in 0..9, found .*{bad}"):
            cifar.CIFAR10Dataset(root, train=False)

    @parameterized.parameters([[1.0, 2.0, 3.0]], [[True, False, True]], [["1", "2", "3"]])
    def test_non_integer_labels_are_refused(self, bad):
        root = self.create_tempdir().full_path
        folder = os.path.join(root, "cifar-10-batches-py")
        os.makedirs(folder)
        images, _ = _random_split(3, seed=9)
        with open(os.path.join(folder, "test_batch"), "wb") as f:
            pickle.dump({b"data": _planar(images), b"labels": bad}, f, protocol=2)
        with self.assertRaisesRegex(DatasetFormatError, r"test_batch: expected b'labels' as integers"):
            cifar.CIFAR10Dataset(root, train=False)

    def test_cifar100_coarse_labels_checked(self):
        root = self.create_tempdir().full_path
        folder = os.path.join(root, "cifar-100-python")
        os.makedirs(folder)
        images, fine = _random_split(2, seed=4, num_classes=100)
        batch = {b"data": _planar(images), b"fine_labels": fine.tolist(), b"coarse_labels": [3, 2**32 + 3]}
        with open(os.path.join(folder, "test"), "wb") as f:
            pickle.dump(batch, f, protocol=2)
        with self.assertRaisesRegex(DatasetFormatError, r"test: expected b'coarse_labels' in 0..19"):
            cifar.CIFAR100Dataset(root, train=False)

    def test_pixel_list_outside_bytes_is_refused(self):
        root = self.create_tempdir().full_path
        folder = os.path.join(root, "cifar-10-batches-py")
        os.makedirs(folder)
        data = [[0] * 3071 + [256]]
        with open(os.path.join(folder, "test_batch"), "wb") as f:
            pickle.dump({b"data": data, b"labels": [1]}, f, protocol=5)
        with self.assertRaisesRegex(DatasetFormatError, r"test_batch: expected b'data' pixel values in 0..255, found 0..256"):
            cifar.CIFAR10Dataset(root, train=False)


class CIFAR10Test(parameterized.TestCase):

    @parameterized.parameters(True, False)
    def test_python_batches_exact_values(self, train):
        root = self.create_tempdir().full_path
        images, labels = _write_cifar10_py(root)
        dataset = image.CIFAR10Dataset(root, train=train)
        expected_images = np.concatenate(images[:5]) if train else images[5]
        expected_labels = np.concatenate(labels[:5]) if train else labels[5]
        self.assertEqual(dataset.format, "py")
        self.assertLen(dataset, len(expected_labels))
        self.assertEqual(dataset.images.dtype, np.uint8)
        self.assertEqual(dataset.labels.dtype, np.int32)
        np.testing.assert_array_equal(dataset.images, expected_images)
        np.testing.assert_array_equal(dataset.labels, expected_labels)
        example = dataset[1]
        np.testing.assert_array_equal(example["x"], expected_images[1])
        self.assertEqual(example["label"], expected_labels[1])

    def test_binary_batches_exact_values(self):
        root = self.create_tempdir().full_path
        folder = os.path.join(root, "cifar-10-batches-bin")
        os.makedirs(folder)
        images, labels = _random_split(5, seed=3)
        records = np.concatenate([labels.astype(np.uint8)[:, None], _planar(images)], axis=1)
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)]:
            records.tofile(os.path.join(folder, name))
        dataset = cifar.CIFAR10Dataset(folder)  # The batch folder itself works as root.
        self.assertEqual(dataset.format, "bin")
        self.assertEqual(dataset.images.shape, (25, 32, 32, 3))
        np.testing.assert_array_equal(dataset.images[5:10], images)
        np.testing.assert_array_equal(dataset.labels[:5], labels)

    def test_truncated_binary_names_file_and_record_size(self):
        root = self.create_tempdir().full_path
        folder = os.path.join(root, "cifar-10-batches-bin")
        os.makedirs(folder)
        np.zeros(3073 * 2 - 7, np.uint8).tofile(os.path.join(folder, "test_batch.bin"))
        with self.assertRaisesRegex(DatasetFormatError, r"test_batch.bin: expected a CIFAR binary batch of 3073-byte records"):
            cifar.CIFAR10Dataset(root, train=False)

    def test_bad_batches_skipped_and_counted(self):
        root = self.create_tempdir().full_path
        _, labels = _write_cifar10_py(root)
        bad = os.path.join(root, "cifar-10-batches-py", "data_batch_3")
        with open(bad, "wb") as f:
            f.write(b"\x80\x02}q\x00")
        os.remove(os.path.join(root, "cifar-10-batches-py", "data_batch_5"))
        dataset = cifar.CIFAR10Dataset(root, skip_bad_files=True)
        self.assertLen(dataset.skipped, 2)
        self.assertEqual(str(dataset.skipped[0][0]), bad)
        self.assertLen(dataset, len(labels[0]) + len(labels[1]) + len(labels[3]))

    def test_missing_folder_lists_paths_tried(self):
        root = self.create_tempdir().full_path
        with self.assertRaises(FileNotFoundError) as cm:
            cifar.CIFAR10Dataset(root)
        self.assertIn(os.path.join(root, "cifar-10-batches-py", "data_batch_1"), str(cm.exception))
        self.assertIn(os.path.join(root, "cifar-10-batches-bin", "data_batch_1.bin"), str(cm.exception))


class CIFAR100Test(absltest.TestCase):

    def test_python_files_with_meta(self):
        root = self.create_tempdir().full_path
        folder = os.path.join(root, "cifar-100-python")
        os.makedirs(folder)
        images, fine = _random_split(6, seed=4, num_classes=100)
        coarse = fine // 5
        batch = {b"data": _planar(images), b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist()}
        with open(os.path.join(folder, "test"), "wb") as f:
            f.write(_python2_pickle(batch))
        meta = {b"fine_label_names": [b"c%d" % i for i in range(100)], b"coarse_label_names": [b"s%d" % i for i in range(20)]}
        with open(os.path.join(folder, "meta"), "wb") as f:
            f.write(_python2_pickle(meta))
        dataset = image.CIFAR100Dataset(root, train=False)
        np.testing.assert_array_equal(dataset.images, images)
        np.testing.assert_array_equal(dataset.labels, fine)
        np.testing.assert_array_equal(dataset.coarse_labels, coarse)
        self.assertEqual(dataset.class_names[7], "c7")
        self.assertEqual(dataset.coarse_class_names[19], "s19")
        self.assertEqual(int(dataset[2]["coarse_label"]), coarse[2])

    def test_bad_class_name_files_named_or_skipped(self):
        root = self.create_tempdir().full_path
        folder = os.path.join(root, "cifar-100-binary")
        os.makedirs(folder)
        images, fine = _random_split(2, seed=6, num_classes=100)
        records = np.concatenate([(fine // 5).astype(np.uint8)[:, None], fine.astype(np.uint8)[:, None], _planar(images)], axis=1)
        records.tofile(os.path.join(folder, "test.bin"))
        with open(os.path.join(folder, "coarse_label_names.txt"), "wb") as f:
            f.write(b"\n".join(b"super\xe9%d" % i for i in range(20)))  # latin-1, not UTF-8
        with open(os.path.join(folder, "fine_label_names.txt"), "w") as f:
            f.write("\n".join(f"c{i}" for i in range(99)))  # One short.
        with self.assertRaisesRegex(DatasetFormatError, r"fine_label_names.txt: expected 100 class names"):
            cifar.CIFAR100Dataset(root, train=False)
        dataset = cifar.CIFAR100Dataset(root, train=False, skip_bad_files=True)
        self.assertEqual([os.path.basename(p) for p, _ in dataset.skipped], ["fine_label_names.txt", "coarse_label_names.txt"])
        self.assertIn("expected UTF-8 class names", dataset.skipped[1][1])
        self.assertEqual((dataset.class_names[99], dataset.coarse_class_names[19]), ("99", "19"))
        self.assertEqual(dataset.num_classes, 100)

    def test_binary_file(self):
        root = self.create_tempdir().full_path
        folder = os.path.join(root, "cifar-100-binary")
        os.makedirs(folder)
        images, fine = _random_split(4, seed=5, num_classes=100)
        coarse = (fine // 5).astype(np.uint8)
        records = np.concatenate([coarse[:, None], fine.astype(np.uint8)[:, None], _planar(images)], axis=1)
        records.tofile(os.path.join(folder, "train.bin"))
        dataset = cifar.CIFAR100Dataset(root)
        np.testing.assert_array_equal(dataset.images, images)
        np.testing.assert_array_equal(dataset.labels, fine)
        np.testing.assert_array_equal(dataset.coarse_labels, coarse)


if __name__ == "__main__":
    absltest.main()
