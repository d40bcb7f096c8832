"""Tests for workshop.core.paths."""

import os
import pathlib
from unittest import mock

from absl.testing import absltest

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


if __name__ == "__main__":
    absltest.main()
