"""Atomic writes (fourierft/files.py): written adapter files have ordinary permissions."""


import fourierft as ff

from helpers import trained


def test_written_files_have_ordinary_permissions(tmp_path):
    import os

    from fourierft.files import write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "result.json", "{}")
        ff.save_adapter(trained()[1], tmp_path / "adapter")
    finally:
        os.umask(old)
    for file in (tmp_path / "result.json", tmp_path / "adapter" / "adapter.safetensors"):
        assert file.stat().st_mode & 0o777 == 0o644, file  # not mkstemp's 0600
