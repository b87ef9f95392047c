"""The Celery runner with a real RabbitMQ broker and real worker processes (``ainode worker``).

- Two workers on loopback process 20 series sent by storescu, with PostgreSQL as the job
  database; one worker is killed with SIGKILL while it runs a job. Nothing is lost and nothing
  is duplicated: every job ends done with exactly one recorded result, and the destination
  receives each output exactly once.
- A lost broker message (queue purged) is published again by the node and the job runs (here
  in a child process of the worker, ``celery.isolate_jobs``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import yaml
from peers import require_binary, storescu
from pydicom.uid import generate_uid
from scaleout_helpers import RabbitMQServer, free_port, wait_until

from node.config import Settings
from node.local_pacs import InProcessStorageSCP
from node.scaleout.dispatcher import CeleryRunner, purge_queue
from node.server import Node
from storage.models import JobState

pytestmark = [pytest.mark.peers, pytest.mark.slow]

SERIES_COUNT = 20
FINAL = (JobState.DONE, JobState.FAILED, JobState.IGNORED, JobState.CANCELLED)


class CountingSCP(InProcessStorageSCP):
    """The in-process Storage SCP, also counting every C-STORE per SOP Instance UID."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counts: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def _handle_store(self, event: Any) -> int:
        status = super()._handle_store(event)
        with self._count_lock:
            self.counts[str(event.request.AffectedSOPInstanceUID)] += 1
        return status


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[CountingSCP]:
    scp = CountingSCP(tmp_path / "pacs")
    scp.start()
    yield scp
    scp.stop()


def _settings(tmp_path: Path, rabbitmq: RabbitMQServer, database_url: str | None,
              destination: CountingSCP | None, **celery: Any) -> dict[str, Any]:
    """Settings shared by the node and its workers (as one YAML file would be)."""
    values: dict[str, Any] = {
        "data_dir": str(tmp_path / "shared"),
        "quiet_seconds": 1.0,
        "runner": "celery",
        "validate_outputs": False,  # dciodvfy is covered by the node tests; keep this one quick
        "send_backoff_seconds": 0.5,
        "log_level": "INFO",
        "celery": {
            "broker_url": rabbitmq.url,
            # Queues unique per test: the broker is shared by the session.
            "default_queue": f"gpu-{tmp_path.name}",
            "lease_seconds": 3.0,
            "republish_after_seconds": 4.0,
            **celery,
        },
    }
    if database_url:
        values["database_url"] = database_url
    if destination is not None:
        values["destinations"] = [f"{destination.ae_title}@127.0.0.1:{destination.port}"]
    return values


class Workers:
    """``ainode worker`` subprocesses (each in its own process group)."""

    def __init__(self, config: Path, log_dir: Path, queue: str) -> None:
        self.config, self.log_dir, self.queue = config, log_dir, queue
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = self.log_dir / f"worker{len(self.processes)}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "node", "worker", "--config", str(self.config),
             "--queues", self.queue],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def logs(self, tail_chars: int | None = 4000) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-(tail_chars or 0):]}"
            for p in sorted(self.log_dir.glob("worker*.log"))
        )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[Path, str], Workers]]:
    created: list[Workers] = []

    def factory(config: Path, queue: str) -> Workers:
        group = Workers(config, tmp_path, queue)
        created.append(group)
        return group

    yield factory
    for group in created:
        group.stop()


def _write_config(path: Path, values: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def _series_files(source: Path, directory: Path, count: int) -> list[Path]:
    """``count`` one-slice series: the real CT slice under new Study/Series/SOP Instance UIDs."""
    directory.mkdir()
    files = []
    for index in range(count):
        ds = pydicom.dcmread(source)
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = directory / f"ct{index:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def _describe(node: Node) -> str:
    return "; ".join(
        f"{j.id}:{j.state}:{j.worker}:{j.error}" for j in node.database.list_jobs(limit=50)
    )


def test_two_workers_process_20_series_and_a_sigkilled_worker_loses_and_duplicates_nothing(
    rabbitmq: RabbitMQServer,
    request: pytest.FixtureRequest,
    destination: CountingSCP,
    workers: Callable[[Path, str], Workers],
    real_ct_slice_dcmtk_path: Path,
    tmp_path: Path,
) -> None:
    require_binary("storescu")
    from pg_server import postgres_url_or_skip

    values = _settings(tmp_path, rabbitmq, postgres_url_or_skip(request), destination)
    config = _write_config(tmp_path / "ainode.yaml", values)
    node = Node(Settings(**values, host="127.0.0.1", port=free_port()))
    node.start()
    group = workers(config, values["celery"]["default_queue"])
    try:
        assert isinstance(node.runner, CeleryRunner)
        group.start()
        group.start()
        files = _series_files(real_ct_slice_dcmtk_path, tmp_path / "series", SERIES_COUNT)
        sent = storescu("127.0.0.1", node.scp.port, "AINODE", files)
        assert sent.returncode == 0, sent.stdout + sent.stderr

        # Kill a worker in the middle of a job (its spawned job process dies with it).
        def a_running_job() -> Any:
            running = [j for j in node.database.list_jobs(limit=50) if j.state == JobState.RUNNING]
            return running[0] if running else None

        victim_job = wait_until(a_running_job, 90, f"a running job; {group.logs()}", poll_s=0.05)
        victim_pid = int(str(victim_job.worker).split(":")[1].split("/")[0])
        assert victim_pid in {p.pid for p in group.processes}
        os.killpg(victim_pid, signal.SIGKILL)
        killed = next(p for p in group.processes if p.pid == victim_pid)
        killed.wait(timeout=10)
        group.start()  # its replacement (systemd's Restart=always does this in a deployment)

        def all_final() -> list[Any] | None:
            jobs = node.database.list_jobs(limit=50)
            if len(jobs) == SERIES_COUNT and all(j.state in FINAL for j in jobs):
                return jobs
            return None

        jobs = wait_until(all_final, 150, f"20 final jobs: {_describe(node)}\n{group.logs()}")
        assert [j.state for j in jobs] == [JobState.DONE] * SERIES_COUNT, _describe(node)

        expected_uids: set[str] = set()
        for summary in jobs:
            job = node.database.get_job(summary.id)
            assert job is not None
            messages = [e.message for e in job.events]
            # Exactly one successful result per job.
            assert sum(m.startswith("outputs written") for m in messages) == 1, messages
            assert {o.kind for o in job.outputs} == {"SEG", "SR", "SC"}
            for output in job.outputs:
                assert [s.state for s in output.sends] == ["sent"]
                expected_uids.add(output.sop_instance_uid)
            if job.id == victim_job.id:
                assert "lease expired; re-queued" in messages, messages
                assert job.attempts == 2
                assert str(victim_pid) not in str(job.worker)
            else:
                assert job.attempts == 1, messages
        assert len(expected_uids) == 3 * SERIES_COUNT
        # The destination got every output, each exactly once.
        wait_until(lambda: len(destination.counts) >= len(expected_uids), 30, "all outputs sent")
        assert set(destination.counts) == expected_uids
        assert set(destination.counts.values()) == {1}
        # A message is a turn for its queue's next job in fair order (docs/scaling.md): the killed
        # job's second attempt is taken either by its own first message, delivered again when
        # the worker died, or by a message published after the lease expired, when no message was
        # still waiting. Whichever it was, every job got at least one message.
        assert node.runner.published_count >= SERIES_COUNT
    finally:
        node.stop()
        group.stop()


def test_a_lost_broker_message_is_published_again(
    rabbitmq: RabbitMQServer,
    workers: Callable[[Path, str], Workers],
    real_ct_slice_path: Path,
    tmp_path: Path,
) -> None:
    # SQLite: node and worker on one machine may share the job database file. The worker runs
    # the job in a child process (isolate_jobs), the local runner's way.
    values = _settings(tmp_path, rabbitmq, None, None, isolate_jobs=True)
    queue = values["celery"]["default_queue"]
    config = _write_config(tmp_path / "ainode.yaml", values)
    node = Node(Settings(**values, host="127.0.0.1", port=free_port()))
    node.start()
    group = workers(config, queue)
    try:
        from pynetdicom import AE

        ds = pydicom.dcmread(real_ct_slice_path)
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(ds.SOPClassUID, [str(ds.file_meta.TransferSyntaxUID)])
        assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="AINODE")
        assert assoc.is_established
        assert int(assoc.send_c_store(ds).Status) == 0
        assoc.release()
        runner = node.runner
        assert isinstance(runner, CeleryRunner)
        wait_until(lambda: runner.published_count >= 1, 30, "the job's first message")
        # The message is lost before any worker takes it.
        assert purge_queue(runner.app, queue) == 1
        group.start()
        jobs = wait_until(
            lambda: [j for j in node.database.list_jobs() if j.state in FINAL], 60,
            f"the job to finish: {_describe(node)}\n{group.logs()}",
        )
        assert jobs[0].state == JobState.DONE, _describe(node)
        assert jobs[0].attempts == 1
        assert runner.published_count >= 2
    finally:
        node.stop()
        group.stop()


def test_an_in_process_job_over_its_time_limit_fails_and_ends_its_worker(
    rabbitmq: RabbitMQServer,
    workers: Callable[[Path, str], Workers],
    real_ct_slice_path: Path,
    tmp_path: Path,
) -> None:
    values = _settings(tmp_path, rabbitmq, None, None)
    # Less than the pipeline needs: the job must time out.
    values["job_timeout_seconds"] = 0.5
    queue = values["celery"]["default_queue"]
    config = _write_config(tmp_path / "ainode.yaml", values)
    node = Node(Settings(**values, host="127.0.0.1", port=free_port()))
    node.start()
    group = workers(config, queue)
    try:
        worker = group.start()
        from pynetdicom import AE

        ds = pydicom.dcmread(real_ct_slice_path)
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(ds.SOPClassUID, [str(ds.file_meta.TransferSyntaxUID)])
        assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="AINODE")
        assert assoc.is_established
        assert int(assoc.send_c_store(ds).Status) == 0
        assoc.release()
        jobs = wait_until(
            lambda: [j for j in node.database.list_jobs() if j.state in FINAL], 60,
            f"the job to fail: {_describe(node)}\n{group.logs()}",
        )
        assert jobs[0].state == JobState.FAILED, _describe(node)
        assert "timed out after 0.5 s" in (jobs[0].error or "")
        assert worker.wait(timeout=30) == 70, group.logs()
    finally:
        node.stop()
        group.stop()
