"""The suite's own layout: test modules import the shared helpers of tests/conftest.py."""

from conftest import write_recording


def test_shared_helpers_are_importable(tmp_path):
    path = tmp_path / "a.wav"
    write_recording(path, 0.1)
    assert path.is_file()
