"""The dashboard in headless Chromium (Playwright), on jobs created by real C-STOREs.

A node receives the real CT slice (pydicom-data) twice, as two series, by pynetdicom C-STORE;
its destination is down, so both l3 jobs end ``failed`` (send failure). ``ainode dashboard`` runs
as its own process on the node's data directory. An admin signs in, lists the jobs, opens one
(key-image thumbnail included), starts the destination and retries: the job ends ``done`` and the
destination holds the three outputs. A viewer sees no retry button and a forged retry is refused.
Screenshots go to tmp_path, and to docs/images/ with AINODE_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid
from web_helpers import PASSWORDS, ROLES, c_store_dataset, save_small_png

from node.config import Destination, Settings
from node.local_pacs import InProcessStorageSCP, find_free_port
from node.server import Node
from node.users import add_user
from storage.models import JobState

pytestmark = [pytest.mark.peers, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def _require_chromium() -> None:
    if not Path(CHROMIUM).is_file():
        message = "Debian chromium is not installed (apt-get install chromium); run scripts/setup.sh"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def _wait_for(predicate, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture
def dashboard_node(tmp_path: Path) -> Iterator[tuple[Node, int, int]]:
    """A node whose destination is down, and ``ainode dashboard`` on its data directory.

    Yields (node, dashboard port, destination port).
    """
    destination_port = find_free_port()
    settings = Settings(
        data_dir=tmp_path / "node",
        host="127.0.0.1",
        port=find_free_port(),
        quiet_seconds=1.0,
        destinations=[Destination(ae_title="DEST", host="127.0.0.1", port=destination_port)],
        send_max_attempts=1,
        send_backoff_seconds=0.2,
        network_timeout_seconds=5,
        validate_outputs=False,
    )
    node = Node(settings)
    node.start()
    for name in ("alice", "victor"):
        add_user(node.database, name, PASSWORDS[name], ROLES[name])
    web_port = find_free_port()
    log = (tmp_path / "dashboard.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "node", "dashboard", "--data-dir", str(settings.data_dir),
         "--port", str(web_port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "dashboard.log").read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{web_port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _wait_for(ready, 60, "ainode dashboard to answer")
        yield node, web_port, destination_port
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
        node.stop()


def test_sign_in_list_open_retry_and_viewer_cannot_retry(
    dashboard_node: tuple[Node, int, int], real_ct_slice_path: Path, tmp_path: Path
) -> None:
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    node, web_port, destination_port = dashboard_node
    base = f"http://127.0.0.1:{web_port}"
    source = pydicom.dcmread(real_ct_slice_path)
    for _ in range(2):  # two studies: with study completion each gives its own job
        source.StudyInstanceUID = generate_uid()
        source.SeriesInstanceUID = generate_uid()
        source.SOPInstanceUID = source.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        assert c_store_dataset(source, node.scp.port) == 0
    jobs = _wait_for(
        lambda: (js := node.database.query_jobs(state="failed").jobs) and len(js) == 2 and js,
        180, "two failed jobs",
    )
    failed_id = jobs[-1].id
    assert "send(s) failed" in (jobs[-1].error or "")
    update_docs = os.environ.get("AINODE_UPDATE_SCREENSHOTS") == "1"
    destination = InProcessStorageSCP(tmp_path / "dest", ae_title="DEST", port=destination_port)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            admin = browser.new_context(viewport={"width": 1280, "height": 900})
            page = admin.new_page()
            page.goto(f"{base}/jobs")
            expect(page).to_have_url(f"{base}/login?next=%2Fjobs")
            page.fill("input[name=username]", "alice")
            page.fill("input[name=password]", PASSWORDS["alice"])
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{base}/jobs")
            expect(page.locator("#signed-in-as")).to_have_text("alice")
            rows = page.locator("table.jobs tbody tr")
            expect(rows).to_have_count(2)
            expect(page.locator("table.jobs .badge.failed")).to_have_count(2)

            page.click(f"table.jobs a[href='/jobs/{failed_id}']")
            expect(page.locator("#job-state")).to_have_text("failed")
            expect(page.locator("#job-error")).to_contain_text("send(s) failed")
            expect(page.locator("#phi")).to_contain_text("hidden")
            page.wait_for_function(
                "() => { const i = document.querySelector('img.thumb');"
                " return i && i.complete && i.naturalWidth > 100; }"
            )
            destination.start()
            try:
                page.click("#retry")
                expect(page.locator(".flash")).to_contain_text("re-sending 3 output(s)")

                def job_done() -> bool:
                    page.reload()
                    return page.locator("#job-state").inner_text() == "done"

                _wait_for(job_done, 60, "the retried job to be done")
                received = {i["SOPInstanceUID"] for i in destination.instances()}
            finally:
                destination.stop()
            outputs = {o.sop_instance_uid for o in node.database.get_job(failed_id).outputs}
            assert len(outputs) == 3 and received == outputs
            expect(page.locator("table.outputs .badge.sent")).to_have_count(3)
            page.screenshot(path=tmp_path / "job.png", full_page=True)

            page.goto(f"{base}/jobs")
            expect(page.locator("table.jobs .badge.done")).to_have_count(1)
            page.screenshot(path=tmp_path / "jobs.png")
            page.goto(f"{base}/node")
            assert int(page.locator("#assoc-accepted").inner_text()) >= 2
            page.screenshot(path=tmp_path / "node.png", full_page=True)

            viewer = browser.new_context()
            vpage = viewer.new_page()
            vpage.goto(f"{base}/login")
            vpage.fill("input[name=username]", "victor")
            vpage.fill("input[name=password]", PASSWORDS["victor"])
            vpage.click("button[type=submit]")
            other = jobs[0].id
            vpage.goto(f"{base}/jobs/{other}")
            expect(vpage.locator("#job-state")).to_have_text("failed")
            expect(vpage.locator("#retry")).to_have_count(0)
            token = vpage.locator("input[name=csrf_token]").first.get_attribute("value")
            forged = vpage.request.post(f"{base}/jobs/{other}/retry", form={"csrf_token": token or ""})
            assert forged.status == 403
        finally:
            browser.close()

    assert node.database.get_job(jobs[0].id).state == JobState.FAILED
    audit = node.database.list_audit()
    assert [(a.user_name, a.action, a.job_id) for a in audit[:2]] == [
        ("victor", "retry", jobs[0].id), ("alice", "retry", failed_id)]
    assert audit[0].outcome.startswith("refused")
    if update_docs:
        save_small_png(tmp_path / "jobs.png", DOCS_IMAGES / "dashboard-jobs.png")
        save_small_png(tmp_path / "job.png", DOCS_IMAGES / "dashboard-job.png")
        save_small_png(tmp_path / "node.png", DOCS_IMAGES / "dashboard-node.png")
