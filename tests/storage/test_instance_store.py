"""The instance store writes atomically under validated UIDs and is idempotent."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.errors import StorageError
from storage.instance_store import InstanceStore


def test_store_writes_exact_bytes_under_uid_path(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path)
    stored = store.store("1.2.3", "1.2.3.4", "1.2.3.4.5", b"DICM-bytes")
    assert stored.path == tmp_path / "instances" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm"
    assert stored.path.read_bytes() == b"DICM-bytes"


def test_resent_instance_replaces_file_and_leaves_no_temp(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path)
    store.store("1.2", "1.2.3", "1.2.3.4", b"first")
    stored = store.store("1.2", "1.2.3", "1.2.3.4", b"second")
    assert stored.path.read_bytes() == b"second"
    assert [p.name for p in stored.path.parent.iterdir()] == ["1.2.3.4.dcm"]


@pytest.mark.parametrize("bad", ["../../etc", "1.2.3/4", "", "1." * 40 + "1", "1.2.abc"])
def test_invalid_uid_is_refused(tmp_path: Path, bad: str) -> None:
    store = InstanceStore(tmp_path)
    with pytest.raises(StorageError, match="invalid SOP Instance UID"):
        store.store("1.2", "1.2.3", bad, b"x")
    assert not any((tmp_path / "instances").rglob("*.dcm"))


def test_iter_instances_lists_files_and_removes_interrupted_writes(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path)
    store.store("1.2", "1.2.3", "1.2.3.4", b"a")
    store.store("1.2", "1.2.3", "1.2.3.5", b"b")
    leftover = tmp_path / "instances" / "1.2" / "1.2.3" / ".tmp-1.2.3.6.dcm.99.1"
    leftover.write_bytes(b"partial")
    found = sorted(i.sop_instance_uid for i in store.iter_instances())
    assert found == ["1.2.3.4", "1.2.3.5"]
    assert not leftover.exists()
