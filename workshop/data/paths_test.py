"""Tests of the environment paths."""

from __future__ import annotations

import os
import pathlib
from unittest import mock

from absl.testing import absltest

from workshop.data import paths


class PathsTest(absltest.TestCase):

    def test_cache_dir_defaults_to_home_cache_and_follows_the_variable(self):
        with mock.patch.dict(os.environ, {paths.CACHE_DIR_ENV: ""}):
            self.assertEqual(paths.cache_dir(), pathlib.Path.home() / ".cache" / "workshop")
        with mock.patch.dict(os.environ, {paths.CACHE_DIR_ENV: "/tmp/elsewhere"}):
            self.assertEqual(paths.cache_dir(), pathlib.Path("/tmp/elsewhere"))

    def test_data_dir_is_none_when_unset_or_empty(self):
        with mock.patch.dict(os.environ, {paths.DATA_DIR_ENV: ""}):
            self.assertIsNone(paths.env_data_dir())
        with mock.patch.dict(os.environ, {paths.DATA_DIR_ENV: "/data"}):
            self.assertEqual(paths.env_data_dir(), "/data")

    def test_variable_names(self):
        self.assertEqual((paths.DATA_DIR_ENV, paths.CACHE_DIR_ENV), ("WORKSHOP_DATA_DIR", "WORKSHOP_CACHE_DIR"))


if __name__ == "__main__":
    absltest.main()
