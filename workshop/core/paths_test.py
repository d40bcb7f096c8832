"""Tests for workshop.core.paths: user paths and the environment paths."""

import os
import pathlib
from unittest import mock

from absl.testing import absltest

from workshop.core import paths
from workshop.core.paths import user_path


class UserPathTest(absltest.TestCase):

    def test_relative_to_bazel_working_directory(self):
        with mock.patch.dict(os.environ, {"BUILD_WORKING_DIRECTORY": "/home/me/project"}):
            self.assertEqual(user_path("runs/vae"), pathlib.Path("/home/me/project/runs/vae"))
            self.assertEqual(user_path("/abs/dir"), pathlib.Path("/abs/dir"))

    def test_current_directory_outside_bazel(self):
        env = {k: v for k, v in os.environ.items() if k != "BUILD_WORKING_DIRECTORY"}
        with mock.patch.dict(os.environ, env, clear=True):
            self.assertEqual(user_path("out"), pathlib.Path(os.getcwd(), "out"))

    def test_expands_home(self):
        with mock.patch.dict(os.environ, {"BUILD_WORKING_DIRECTORY": "/elsewhere", "HOME": "/home/me"}):
            self.assertEqual(user_path("~/data"), pathlib.Path("/home/me/data"))


class EnvironmentPathsTest(absltest.TestCase):

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
