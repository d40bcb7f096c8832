"""Tests for workshop.data.idx: exact round trips and errors that name the file."""

import gzip
import os

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from workshop.data import idx


class RoundTripTest(parameterized.TestCase):

    @parameterized.product(
            dtype=["uint8", "int8", "int16", "int32", "float32", "float64"],
            suffix=["", ".gz"],
    )
    def test_round_trip_is_exact(self, dtype, suffix):
        rng = np.random.default_rng(0)
        info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else np.finfo(dtype)
        values = rng.uniform(float(info.min) / 2, float(info.max) / 2, size=(3, 4, 5))
        array = values.astype(dtype)
        array.flat[0] = info.min  # The extremes survive the big-endian round trip.
        array.flat[1] = info.max
        path = os.path.join(self.create_tempdir().full_path, "a-idx3" + suffix)

        idx.write_idx(path, array)
        result = idx.read_idx(path)

        self.assertEqual(result.dtype, np.dtype(dtype))
        self.assertTrue(result.dtype.isnative)
        np.testing.assert_array_equal(result, array)
        self.assertTrue(result.flags.writeable)

    def test_header_bytes_follow_the_mnist_layout(self):
        path = os.path.join(self.create_tempdir().full_path, "labels-idx1-ubyte")
        idx.write_idx(path, np.array([7, 2, 1], np.uint8))
        with open(path, "rb") as f:
            raw = f.read()
        # Magic 0x00000801 (uint8, 1 dim), count 3 big-endian, then the labels.
        self.assertEqual(raw, bytes.fromhex("00000801" "00000003" "070201"))

    def test_reads_big_endian_values_from_hand_written_bytes(self):
        path = os.path.join(self.create_tempdir().full_path, "b")
        with open(path, "wb") as f:
            # int16 (0x0B), 2 dims: [1, 2], values 0x0102 = 258 and 0xFFFE = -2.
            f.write(bytes.fromhex("00000B02" "00000001" "00000002" "0102" "FFFE"))
        np.testing.assert_array_equal(idx.read_idx(path), np.array([[258, -2]], np.int16))

    def test_gz_file_is_gzip_of_the_raw_bytes(self):
        tmp = self.create_tempdir().full_path
        array = np.arange(12, dtype=np.int32).reshape(3, 4)
        idx.write_idx(os.path.join(tmp, "a"), array)
        idx.write_idx(os.path.join(tmp, "a.gz"), array)
        with open(os.path.join(tmp, "a"), "rb") as f, gzip.open(os.path.join(tmp, "a.gz")) as g:
            self.assertEqual(f.read(), g.read())

    def test_zero_length_first_dim(self):
        path = os.path.join(self.create_tempdir().full_path, "empty")
        idx.write_idx(path, np.zeros((0, 28, 28), np.uint8))
        self.assertEqual(idx.read_idx(path).shape, (0, 28, 28))

    def test_unsupported_dtype_is_refused(self):
        path = os.path.join(self.create_tempdir().full_path, "x")
        with self.assertRaisesRegex(ValueError, "dtype float16.*uint8"):
            idx.write_idx(path, np.zeros(3, np.float16))


class ReadErrorTest(parameterized.TestCase):

    def _write_bytes(self, name, data):
        path = os.path.join(self.create_tempdir().full_path, name)
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "wb") as f:
            f.write(data)
        return path

    def test_missing_file_names_the_path(self):
        path = os.path.join(self.create_tempdir().full_path, "nope-idx3-ubyte.gz")
        with self.assertRaisesRegex(FileNotFoundError, "nope-idx3-ubyte.gz"):
            idx.read_idx(path)

    @parameterized.parameters("", ".gz")
    def test_truncated_data_gives_byte_counts(self, suffix):
        header = bytes.fromhex("00000803" "00000002" "00000002" "00000003")
        path = self._write_bytes("images" + suffix, header + bytes(7))
        with self.assertRaises(idx.DatasetFormatError) as cm:
            idx.read_idx(path)
        message = str(cm.exception)
        self.assertIn(path, message)
        self.assertIn("expected an IDX file (MNIST format)", message)
        self.assertIn("need 12 bytes of data, found 7", message)
        self.assertIsInstance(cm.exception, ValueError)

    def test_trailing_bytes_are_an_error(self):
        path = self._write_bytes("labels", bytes.fromhex("00000801" "00000002") + bytes(3))
        with self.assertRaisesRegex(idx.DatasetFormatError, "need 2 bytes of data, found 3"):
            idx.read_idx(path)

    def test_bad_magic(self):
        path = self._write_bytes("not-idx", b"PK\x03\x04 a zip file, not IDX")
        with self.assertRaisesRegex(idx.DatasetFormatError, r"not-idx: .*bad magic 0x504b0304"):
            idx.read_idx(path)

    def test_unknown_dtype_code(self):
        path = self._write_bytes("odd", bytes.fromhex("00000A01" "00000001") + bytes(1))
        with self.assertRaisesRegex(idx.DatasetFormatError, "odd: .*unknown dtype code 0x0A"):
            idx.read_idx(path)

    def test_short_header(self):
        path = self._write_bytes("short", bytes.fromhex("00000803" "00000002"))
        with self.assertRaisesRegex(idx.DatasetFormatError, "short: .*needs 16 bytes"):
            idx.read_idx(path)

    def test_truncated_gzip_stream(self):
        tmp = self.create_tempdir().full_path
        path = os.path.join(tmp, "images.gz")
        idx.write_idx(path, np.arange(1000, dtype=np.int32))
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        with self.assertRaisesRegex(idx.DatasetFormatError, "images.gz: .*gzip stream is truncated"):
            idx.read_idx(path)

    def test_raw_file_named_gz_is_corrupt_gzip(self):
        tmp = self.create_tempdir().full_path
        path = os.path.join(tmp, "labels.gz")
        with open(path, "wb") as f:
            f.write(bytes.fromhex("00000801" "00000001" "05"))
        with self.assertRaisesRegex(idx.DatasetFormatError, "labels.gz: .*gzip stream is corrupt"):
            idx.read_idx(path)


if __name__ == "__main__":
    absltest.main()
