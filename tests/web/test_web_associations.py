"""The listener logs every association request (accepted or rejected) for the node page."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from pynetdicom import AE

from node.config import AllowedCaller, Settings
from node.local_pacs import find_free_port
from node.server import Node
from storage.models import utcnow


def _echo(port: int, calling: str) -> bool:
    ae = AE(ae_title=calling)
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.acse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title="AINODE")
    if not assoc.is_established:
        return False
    assoc.send_c_echo()
    assoc.release()
    return True


@pytest.fixture
def node(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "node", host="127.0.0.1", port=find_free_port(),
                        allowed_callers=[AllowedCaller(ae_title="CT1")])
    started = Node(settings)
    started.start()
    yield started
    started.stop()


def test_accepted_and_rejected_associations_are_logged(node: Node) -> None:
    assert _echo(node.scp.port, "CT1")
    assert _echo(node.scp.port, "CT1")
    assert not _echo(node.scp.port, "INTRUDER")
    since = utcnow() - dt.timedelta(minutes=5)
    deadline = time.monotonic() + 5  # the accepted row is written just after A-ASSOCIATE-AC
    while node.database.association_counts(since)["accepted"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.database.association_counts(since) == {"accepted": 2, "rejected": 1}
