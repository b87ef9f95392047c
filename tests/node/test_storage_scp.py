"""The Storage SCP over real loopback associations: C-ECHO, C-STORE, idempotence, allow-list."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
from node_helpers import c_echo, c_store
from peers import echoscu, require_binary, storescu
from pynetdicom import AE

from node.config import AllowedCaller
from node.server import Node


def test_echoscu_gets_success(make_node: Callable[..., Node]) -> None:
    require_binary("echoscu")
    node = make_node()
    result = echoscu("127.0.0.1", node.scp.port, "AINODE")
    assert result.returncode == 0, result.stdout + result.stderr


def test_c_store_is_stored_durably_and_recorded(
    make_node: Callable[..., Node], real_ct_slice_path: Path
) -> None:
    node = make_node()
    assert c_store(real_ct_slice_path, node.scp.port) == 0x0000
    ds = pydicom.dcmread(real_ct_slice_path)
    stored = node.store.path_for(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    # The stored file is the received object: same UIDs, same (JPEG 2000) transfer syntax.
    back = pydicom.dcmread(stored)
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert back.PixelData == ds.PixelData
    node.scp.recorder.drain()
    (instance,) = node.database.series_instances(str(ds.SeriesInstanceUID))
    assert instance.calling_ae_title == "TESTSCU" and instance.path == str(stored)


def test_resent_instance_is_idempotent(make_node: Callable[..., Node], real_ct_slice_path: Path) -> None:
    node = make_node(quiet_seconds=60)
    assert c_store(real_ct_slice_path, node.scp.port) == 0
    assert c_store(real_ct_slice_path, node.scp.port) == 0
    node.scp.recorder.drain()
    ds = pydicom.dcmread(real_ct_slice_path, stop_before_pixels=True)
    assert len(node.database.series_instances(str(ds.SeriesInstanceUID))) == 1
    files = list((node.settings.data_dir / "instances").rglob("*"))
    assert sum(p.is_file() for p in files) == 1


def test_storescu_sends_a_real_slice(
    make_node: Callable[..., Node], real_ct_slice_dcmtk_path: Path
) -> None:
    require_binary("storescu")
    node = make_node(quiet_seconds=60)
    result = storescu("127.0.0.1", node.scp.port, "AINODE", [real_ct_slice_dcmtk_path])
    assert result.returncode == 0, result.stdout + result.stderr
    node.scp.recorder.drain()
    ds = pydicom.dcmread(real_ct_slice_dcmtk_path, stop_before_pixels=True)
    assert len(node.database.series_instances(str(ds.SeriesInstanceUID))) == 1


def test_allow_list_rejects_unknown_callers(
    make_node: Callable[..., Node], real_ct_slice_path: Path
) -> None:
    node = make_node(allowed_callers=[AllowedCaller(ae_title="PACS", host="127.0.0.1")])
    assert c_echo(node.scp.port, calling="PACS") == 0
    assert c_echo(node.scp.port, calling="INTRUDER") is None
    ae = AE(ae_title="INTRUDER")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")
    assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="AINODE")
    assert assoc.is_rejected  # a proper A-ASSOCIATE-RJ, not a dropped connection
    assert node.scp.counters.rejected_associations == 2
    node2 = make_node(allowed_callers=[AllowedCaller(ae_title="PACS", host="10.9.9.9")])
    assert c_echo(node2.scp.port, calling="PACS") is None  # right AE title, wrong address


def test_dataset_without_series_uid_is_refused_not_acknowledged(
    make_node: Callable[..., Node], real_ct_slice_path: Path
) -> None:
    node = make_node()
    ds = pydicom.dcmread(real_ct_slice_path)
    del ds.SeriesInstanceUID
    status = c_store(ds, node.scp.port)
    assert status != 0 and status >= 0xA000
    assert not any((node.settings.data_dir / "instances").rglob("*.dcm"))
    assert c_echo(node.scp.port) == 0  # still serving
