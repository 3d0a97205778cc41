"""`tinybev_ros.atomic_file`: a target is either the old file or the whole new one, never a part."""

from __future__ import annotations

import os

import pytest

from tinybev_ros.atomic_file import atomic_path, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path) -> None:
    target = tmp_path / "report.json"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_write_in_progress_never_matches_the_targets_glob_and_the_result_gets_a_new_files_permissions(
        tmp_path) -> None:
    target = tmp_path / "deep" / "sample.safetensors"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"tensors")
        assert tmp.parent == target.parent and not target.exists()
        assert list(target.parent.glob("*.safetensors")) == []
    mask = os.umask(0)
    os.umask(mask)
    assert target.read_bytes() == b"tensors" and (target.stat().st_mode & 0o777) == 0o666 & ~mask
