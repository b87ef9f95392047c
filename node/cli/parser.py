"""The ``ainode`` parser, :func:`main`, and the node's own commands.

serve, run, jobs, echo, route, check-config, demo and worker are here; the other command groups
are in their own modules of :mod:`node.cli`. Heavy modules (numpy, highdicom, torch, MONAI) are
imported inside the commands that need them, so ``ainode --help`` and ``ainode jobs list`` start
instantly.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ainode_core.errors import AINodeError, ConfigError, RoutingError
from node.cli.common import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    add_node_options,
    check_ports_free,
    configure_logging,
    load_cli_settings,
    open_database,
    progress,
)
from node.cli.models import cmd_models_install, cmd_models_list, cmd_models_show, cmd_models_verify
from node.cli.purge import cmd_purge
from node.cli.training import (
    EvaluateHelpFormatter,
    ProtocolsHelpFormatter,
    TrainHelpFormatter,
    cmd_evaluate,
    cmd_train,
)
from node.cli.web import add_parsers as add_web_parsers
from node.presentation import dash, measurement_lines, render_lines

logger = logging.getLogger("ainode")

# -- serve ------------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from node.config import Destination
    from node.server import Node

    destinations = [Destination.parse(d) for d in args.send_to] if args.send_to else None
    settings = load_cli_settings(
        args,
        port=args.port,
        host=args.host,
        ae_title=args.ae_title,
        quiet_seconds=args.quiet_seconds,
        destinations=destinations,
        workers=args.workers,
    )
    configure_logging(settings.log_level, settings.log_phi)
    # Before anything is created or migrated: a busy port must not leave a data directory behind.
    check_ports_free(settings)
    node = Node(settings)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        logger.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    node.start()
    # Everything imported so far lives as long as the process: keep it out of the cyclic garbage
    # collector's scans, which otherwise slow every C-STORE in a long-running node.
    gc.freeze()
    logger.info(
        "ainode %s serving as %s on port %d; data in %s; sending to %s",
        node.version,
        settings.ae_title,
        node.scp.port,
        settings.data_dir,
        ", ".join(d.name for d in settings.destinations) or "(no destination)",
    )
    try:
        stop.wait()
    finally:
        node.stop()
    return EXIT_OK


# -- run --------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from node.execution import JobSpec, execute_job
    from node.routing import configured_rules, route_series
    from node.server import pixel_region_of, software_version
    from pipelines.volume import expand_paths, group_by_series, read_instances

    settings = load_cli_settings(args)
    configure_logging("WARNING" if not args.verbose else "INFO")
    read = read_instances(expand_paths(args.inputs), stop_before_pixels=True)
    for error in read.errors:
        print(f"skipped: {error}", file=sys.stderr)
    series = group_by_series(read.datasets)
    if not series:
        print("no DICOM series found in the inputs", file=sys.stderr)
        return EXIT_FAILURE
    rules = configured_rules(settings.routing_rules)
    out_root = Path(args.out)
    results = []
    status = EXIT_OK
    for series_uid, headers in progress(series.items(), desc="series", unit="series",
                                        total=len(series)):
        files = [str(h.filename) for h in headers]
        protocol = args.protocol
        if protocol is None:
            decision = route_series(
                headers, rules, pixel_region=functools.partial(pixel_region_of, files)
            )
            protocol = decision.protocol
            if protocol is None:
                results.append({"series_instance_uid": series_uid, "ignored": decision.reason})
                continue
        spec = JobSpec(
            job_id=0,
            protocol=protocol,
            files=files,
            out_dir=str(out_root / series_uid),
            params=settings.protocol_params(protocol),
            model=settings.model_options(protocol),
            validate_outputs=not args.no_validate,
            software_version=software_version(),
        )
        outcome = execute_job(spec)
        entry: dict[str, Any] = {"series_instance_uid": series_uid, "protocol": protocol}
        if outcome.ok:
            entry.update(
                algorithm=outcome.algorithm,
                results=outcome.summary,
                warnings=outcome.warnings,
                outputs={o.kind: o.path for o in outcome.outputs},
            )
            if args.png:
                entry["outputs"].update(_key_image_png(outcome.outputs))
        else:
            entry["error"] = outcome.error
            status = EXIT_FAILURE
        results.append(entry)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        for entry in results:
            print(_format_run_entry(entry))
    return status


def _key_image_png(outputs: list[Any]) -> dict[str, str]:
    """Write the Secondary Capture of ``outputs`` as ``key_image.png`` beside it."""
    import pydicom
    from PIL import Image

    written = {}
    for output in outputs:
        if output.kind != "SC":
            continue
        ds = pydicom.dcmread(output.path)
        path = Path(output.path).with_name("key_image.png")
        Image.fromarray(ds.pixel_array).save(path)
        written["PNG"] = str(path)
    return written


def _format_run_entry(entry: dict[str, Any]) -> str:
    lines = [f"series {entry['series_instance_uid']}"]
    if "ignored" in entry:
        lines.append(f"  ignored: {entry['ignored']}")
        return "\n".join(lines)
    lines.append(f"  protocol: {entry['protocol']}")
    if "error" in entry:
        lines.append(f"  FAILED: {entry['error']}")
        return "\n".join(lines)
    lines.append(f"  algorithm: {entry['algorithm']}")
    lines.extend(render_lines(measurement_lines(entry["protocol"], entry["results"]), indent="  "))
    for warning in entry.get("warnings", []):
        lines.append(f"  warning: {warning}")
    for kind, path in entry.get("outputs", {}).items():
        lines.append(f"  {kind}: {path}")
    return "\n".join(lines)


# -- jobs -------------------------------------------------------------------------------------------


def _add_queue_places(database: Any, jobs: list[dict[str, Any]]) -> None:
    """Add each queued job's projected place and wait (``queue_position``, ``queued``,
    ``waiting_seconds``; see :meth:`storage.dashboard_queries.DashboardQueries.queue_places`)."""
    places = database.queue_places([job["id"] for job in jobs])
    for job in jobs:
        place = places.get(job["id"])
        if place is not None:
            job.update(queue_position=place.position, queued=place.queued,
                       waiting_seconds=place.waiting_seconds)


def _queue_text(job: dict[str, Any]) -> str:
    """``#3 of 120 (urgent, waiting 4.2 min)`` for a queued job, else ``""``."""
    if not job.get("queue_position"):
        return ""
    wait = job.get("waiting_seconds")
    shown = "-" if wait is None else f"{wait:.0f} s" if wait < 120 else f"{wait / 60:.1f} min"
    return f"#{job['queue_position']} of {job['queued']} ({job['priority']}, waiting {shown})"


def _job_dict(job: Any, detail: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": job.id,
        "state": str(job.state),
        "protocol": job.protocol,
        "study_instance_uid": job.study_instance_uid,
        "series_instance_uid": job.series_instance_uid,
        "modality": job.modality,
        "calling_ae_title": job.calling_ae_title,
        "instances": job.instance_count,
        "attempts": job.attempts,
        "created_at": job.created_at.isoformat(timespec="seconds") + "Z",
        "finished_at": job.finished_at.isoformat(timespec="seconds") + "Z" if job.finished_at else None,
        "error": job.error,
        "priority": ("urgent", "routine", "low")[job.priority] if job.priority in (0, 1, 2) else "-",
    }
    if detail:
        data.update(
            routing_rule=job.routing_rule,
            routing_reason=job.routing_reason,
            algorithm=job.algorithm,
            results=json.loads(job.results_json) if job.results_json else None,
            outputs=[
                {
                    "kind": o.kind,
                    "sop_instance_uid": o.sop_instance_uid,
                    "series_instance_uid": o.series_instance_uid,
                    "path": o.path,
                    "sends": [
                        {
                            "destination": s.destination,
                            "state": str(s.state),
                            "attempts": s.attempts,
                            "last_error": s.last_error,
                        }
                        for s in o.sends
                    ],
                }
                for o in job.outputs
            ],
            events=[
                {"at": e.at.isoformat(timespec="seconds") + "Z", "level": e.level, "message": e.message}
                for e in job.events
            ],
        )
    return data


def cmd_jobs_list(args: argparse.Namespace) -> int:
    database = open_database(args)
    jobs = [_job_dict(j) for j in database.list_jobs(limit=args.limit, state=args.state)]
    _add_queue_places(database, jobs)
    if args.json:
        print(json.dumps(jobs, indent=2))
        return EXIT_OK
    if not jobs:
        print("no jobs yet" + (f" in state {args.state}" if args.state else "")
              + " (a series becomes a job when its study is quiet for study_quiet_seconds, or with "
                 "completion: series when the series is quiet for quiet_seconds)")
        return EXIT_OK
    print(f"{'ID':>5}  {'STATE':<9} {'PROTOCOL':<26} {'MOD':<4} {'N':>4}  {'CREATED':<20}  SERIES / ERROR")
    for job in jobs:
        tail = job["error"] or job["series_instance_uid"]
        tail = f"{_queue_text(job)} {tail}" if _queue_text(job) else tail
        print(
            f"{job['id']:>5}  {job['state']:<9} {dash(job['protocol']):<26} {dash(job['modality']):<4} "
            f"{job['instances']:>4}  {job['created_at']:<20}  {dash(tail)}"
        )
    return EXIT_OK


def cmd_jobs_show(args: argparse.Namespace) -> int:
    database = open_database(args)
    job = database.get_job(args.id)
    if job is None:
        print(f"no job {args.id}; see `ainode jobs list`", file=sys.stderr)
        return EXIT_FAILURE
    data = _job_dict(job, detail=True)
    _add_queue_places(database, [data])
    data["study_series"] = _study_series(database, job.study_instance_uid)
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    for key, label in (("id", "job"), ("state", "state"), ("protocol", "protocol"),
                       ("routing_rule", "routing rule"), ("routing_reason", "routing reason"),
                       ("algorithm", "algorithm"), ("study_instance_uid", "study UID"),
                       ("series_instance_uid", "series UID"), ("modality", "modality"),
                       ("calling_ae_title", "sent by"), ("instances", "instances"),
                       ("attempts", "attempts"), ("created_at", "created"),
                       ("finished_at", "finished"), ("error", "error")):
        print(f"{label + ':':<16}{dash(data[key])}")
    if _queue_text(data):
        print(f"{'queue:':<16}{_queue_text(data)}")
    if data["results"]:
        lines = measurement_lines(data["protocol"], data["results"])
        print("measurements:")
        print("\n".join(render_lines(lines, indent="  ")))
        print(f"  (all {len(data['results'])} stored values: ainode jobs show {data['id']} --json)")
    if data["outputs"]:
        print("outputs:")
        for output in data["outputs"]:
            sends = ", ".join(f"{s['destination']} {s['state']}" for s in output["sends"]) or "not sent"
            print(f"  {output['kind']:<3} {output['sop_instance_uid']}  ({sends})")
    if len(data["study_series"]) > 1:
        print("series of the study (latest job of each; why it was chosen or skipped):")
        for entry in data["study_series"]:
            mark = "*" if entry["job"] == data["id"] else " "
            print(f" {mark}job {entry['job']:<5} {entry['state']:<9} {entry['series_instance_uid']}")
            print(f"    {dash(entry['reason'] or entry['error'])}")
    print("events:")
    for event in data["events"]:
        print(f"  {event['at']}  {event['level']:<7} {event['message']}")
    return EXIT_OK


def _study_series(database: Any, study_instance_uid: str) -> list[dict[str, Any]]:
    """Every series of a study with its latest job and that job's routing (selection) reason."""
    latest: dict[str, Any] = {}
    for job in database.study_jobs(study_instance_uid):
        latest[job.series_instance_uid] = job
    return [
        {
            "series_instance_uid": uid,
            "job": job.id,
            "state": str(job.state),
            "protocol": job.protocol,
            "reason": job.routing_reason,
            "error": job.error,
        }
        for uid, job in latest.items()
    ]


def cmd_jobs_retry(args: argparse.Namespace) -> int:
    database = open_database(args)
    print(f"job {args.id}: {database.retry_job(args.id)}")
    return EXIT_OK


# -- echo, route, check-config, demo ----------------------------------------------------------------


def cmd_echo(args: argparse.Namespace) -> int:
    from pynetdicom import AE
    
    from node.config import Destination

    destination = Destination.parse(args.destination)
    ae = AE(ae_title=args.ae_title)
    ae.add_requested_context("1.2.840.10008.1.1")  # Verification SOP Class
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = args.timeout
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        print(f"C-ECHO {destination.name}: association failed", file=sys.stderr)
        return EXIT_FAILURE
    status = assoc.send_c_echo()
    assoc.release()
    code = int(status.Status) if status else -1
    if code == 0:
        print(f"C-ECHO {destination.name}: success")
        return EXIT_OK
    print(f"C-ECHO {destination.name}: status 0x{code & 0xFFFF:04X}", file=sys.stderr)
    return EXIT_FAILURE


def cmd_route(args: argparse.Namespace) -> int:
    from node.routing import configured_rules, route_series, summarize_series
    from node.selection import SeriesCandidate, select_series
    from node.server import pixel_region_of
    from pipelines.volume import expand_paths, group_by_series, read_instances

    settings = load_cli_settings(args)
    rules = configured_rules(settings.routing_rules)
    read = read_instances(expand_paths(args.inputs), stop_before_pixels=True)
    for error in read.errors:
        print(f"skipped: {error}", file=sys.stderr)
    output: list[dict[str, Any]] = []
    studies: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for series_uid, headers in group_by_series(read.datasets).items():
        files = [str(h.filename) for h in headers]
        decision = route_series(
            headers, rules, pixel_region=functools.partial(pixel_region_of, files)
        )
        entry = {
            "series_instance_uid": series_uid,
            "instances": len(headers),
            "protocol": decision.protocol,
            "rule": decision.rule,
            "reason": decision.reason,
            "checks": list(decision.checks),
        }
        output.append(entry)
        study_uid = str(headers[0].get("StudyInstanceUID", ""))
        candidate = SeriesCandidate(summarize_series(headers), decision)
        studies.setdefault(study_uid, []).append((entry, candidate))
    # A whole study: the series each protocol would run on (completion: study, docs/routing.md).
    preferences = settings.series_preferences()
    for members in studies.values():
        choices = select_series([c for _, c in members], preferences)
        for (entry, _), choice in zip(members, choices, strict=True):
            entry.update(chosen=choice.chosen, rank=choice.rank, selection=choice.reason)
    if args.json:
        print(json.dumps(output, indent=2))
        return EXIT_OK
    for entry in output:
        print(route_line(entry) + _selection_note(entry))
        if args.explain:
            for check in entry["checks"]:
                print(f"    {check}")
    if not args.explain and output:
        print("(every rule checked: --explain)", file=sys.stderr)
    return EXIT_OK


def _selection_note(entry: dict[str, Any]) -> str:
    """``; chosen ...`` / ``; skipped ...`` after a routed series' line (nothing for a series
    routing ignored, whose line says why already)."""
    if entry.get("chosen"):
        return f"; {entry['selection']}"
    if entry.get("selection") and (entry["protocol"] or "ainode output" in entry["selection"]):
        return f"; {entry['selection']}"
    return ""


def route_line(entry: dict[str, Any]) -> str:
    """One line per series: where it goes, by which rule, and why."""
    target = entry["protocol"] or "ignored"
    reason = entry["reason"] or "no reason given"
    if not entry["rule"]:
        reason = f"no rule matched: {reason}"
    elif entry["rule"] not in reason:
        reason = f"rule {entry['rule']}: {reason}"
    return (
        f"{entry['series_instance_uid']} ({entry['instances']} instance"
        f"{'s' if entry['instances'] != 1 else ''}) -> {target}: {reason}"
    )


def cmd_check_config(args: argparse.Namespace) -> int:
    """``ainode check-config FILE...``: one verdict line per file; ``--show`` the resolved settings."""
    from node.config import settings_reference

    if args.reference:
        print(settings_reference())
        return EXIT_OK
    if not args.files:
        print("give one or more configuration files (e.g. deploy/*.yaml), or --reference",
              file=sys.stderr)
        return EXIT_USAGE
    status = EXIT_OK
    for file in args.files:
        if _is_compose_file(file):
            # deploy/compose.yaml beside the configuration (`check-config deploy/*.yaml`).
            print(f"{file}: skipped, a Docker Compose file (its ainode settings are AINODE_* "
                  "environment variables; check them with `docker compose config`)")
            continue
        try:
            settings, rules = _checked_settings(file)
        except ConfigError as exc:
            print(f"{file}: INVALID: {exc}", file=sys.stderr)
            status = EXIT_USAGE
            continue
        source = "from the file" if settings.routing_rules is not None else "the shipped defaults"
        print(f"{file}: valid ({len(rules)} routing rules, {source}; "
              f"{len(settings.destinations)} destination(s); data in {settings.data_dir})")
        if args.show:
            print(json.dumps(_shown_settings(settings), indent=2))
    from pipelines.registry import load_errors

    for entry, reason in load_errors().items():
        print(f"warning: protocol plug-in {entry} is not loaded (the node serves the other "
              f"protocols): {reason}", file=sys.stderr)
    return status


def _is_compose_file(file: str) -> bool:
    """Whether YAML ``file`` is a Docker Compose file: a ``services`` mapping and no ainode setting.

    Any other file, including one whose keys are all misspelt settings, gets the full check (and
    its errors).
    """
    import yaml

    from node.config import Settings

    try:
        content = yaml.safe_load(Path(file).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return (isinstance(content, dict) and isinstance(content.get("services"), dict)
            and not set(map(str, content)) & set(Settings.model_fields))


def _checked_settings(file: str) -> tuple[Any, list[Any]]:
    """Settings of ``file`` with protocol parameters and routing rules checked.

    Raises
    ------
    ConfigError
        Whatever is wrong in the file (every problem listed).
    """
    from node.config import load_settings
    from node.routing import configured_rules

    settings = load_settings(file)
    settings.check_protocol_parameters()
    try:
        rules = configured_rules(settings.routing_rules)
    except RoutingError as exc:
        raise ConfigError(str(exc)) from exc
    return settings, rules


def _shown_settings(settings: Any) -> dict[str, Any]:
    """The resolved settings as JSON values, passwords in URLs redacted."""
    from storage.database import redact_url

    shown: dict[str, Any] = json.loads(settings.model_dump_json())
    if shown.get("database_url"):
        shown["database_url"] = redact_url(shown["database_url"])
    if (shown.get("celery") or {}).get("broker_url"):
        shown["celery"]["broker_url"] = redact_url(shown["celery"]["broker_url"])
    return shown


def cmd_demo(args: argparse.Namespace) -> int:
    from node.demo import run_demo

    configure_logging("WARNING" if not args.verbose else "INFO")
    return run_demo(
        work_dir=Path(args.work_dir) if args.work_dir else None, keep=args.keep,
        pacs_kind=args.pacs, log_to_file=not args.verbose,
    )


def cmd_worker(args: argparse.Namespace) -> int:
    """``ainode worker``: load the settings and run a worker until stopped.

    ``args``: ``config``, ``data_dir``, ``database_url``, ``queues`` (comma-separated),
    ``broker_url``, ``name`` (the parser is in :func:`build_parser`).
    """
    from node.config import load_settings
    from node.scaleout.app import known_queues
    from node.worker import run_worker

    overrides: dict[str, Any] = {
        "data_dir": Path(args.data_dir) if args.data_dir else None,
        "database_url": args.database_url,
    }
    settings = load_settings(args.config, **overrides)
    if args.broker_url:
        settings.celery.broker_url = args.broker_url
    logging.basicConfig(
        level=getattr(logging, settings.log_level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # highdicom logs every module it copies at INFO.
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    queues = (
        [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else known_queues(settings)
    )
    if not queues:
        raise ConfigError("--queues names no queue; e.g. --queues gpu,cpu")
    run_worker(settings, queues, name=args.name, loglevel=settings.log_level)
    return 0


# -- parser -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ainode``."""
    parser = argparse.ArgumentParser(
        prog="ainode",
        description="DICOM node that runs imaging AI protocols beside a PACS (research use only).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the node: receive, analyse, send back")
    add_node_options(serve)
    serve.add_argument("--port", type=int, help="DICOM listener port (default 11112)")
    serve.add_argument("--host", help="listener address (default 0.0.0.0)")
    serve.add_argument("--ae-title", help="the node's AE title (default AINODE)")
    serve.add_argument(
        "--send-to", action="append", metavar="AET@HOST:PORT", help="destination of results (repeatable)"
    )
    serve.add_argument("--quiet-seconds", type=float, help="series completion quiet period (default 10)")
    serve.add_argument("--workers", type=int, help="jobs run in parallel (default 1)")
    serve.set_defaults(func=cmd_serve)

    run = sub.add_parser("run", help="run a protocol offline on files and write the outputs",
                         formatter_class=ProtocolsHelpFormatter)
    add_node_options(run)
    run.add_argument("inputs", nargs="+", metavar="FILES_OR_DIRS")
    run.add_argument("--protocol", help="protocol name (default: choose by the routing rules)")
    run.add_argument("--out", required=True, help="output directory")
    run.add_argument("--json", action="store_true", help="print results as JSON")
    run.add_argument("--no-validate", action="store_true", help="skip dciodvfy validation")
    run.add_argument(
        "--png", action="store_true",
        help="also write each key image (the Secondary Capture) as key_image.png beside the "
        "outputs, to look at the result without a DICOM viewer",
    )
    run.add_argument("--verbose", "-v", action="store_true")
    run.set_defaults(func=cmd_run)

    jobs = sub.add_parser("jobs", help="list, show and retry jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    jobs_list = jobs_sub.add_parser("list", help="list recent jobs")
    add_node_options(jobs_list)
    jobs_list.add_argument("--json", action="store_true")
    jobs_list.add_argument("--limit", type=int, default=50)
    jobs_list.add_argument(
        "--state",
        choices=["received", "queued", "running", "sending", "done", "failed", "ignored", "cancelled"],
        help="only jobs in this state",
    )
    jobs_list.set_defaults(func=cmd_jobs_list)
    jobs_show = jobs_sub.add_parser("show", help="show one job with its timeline")
    add_node_options(jobs_show)
    jobs_show.add_argument("id", type=int)
    jobs_show.add_argument("--json", action="store_true")
    jobs_show.set_defaults(func=cmd_jobs_show)
    jobs_retry = jobs_sub.add_parser("retry", help="re-send failed outputs or run a job again")
    add_node_options(jobs_retry)
    jobs_retry.add_argument("id", type=int)
    jobs_retry.set_defaults(func=cmd_jobs_retry)

    echo = sub.add_parser("echo", help="C-ECHO a DICOM node")
    echo.add_argument("destination", metavar="AET@HOST:PORT")
    echo.add_argument("--ae-title", default="AINODE", help="calling AE title")
    echo.add_argument("--timeout", type=float, default=10.0)
    echo.set_defaults(func=cmd_echo)

    route = sub.add_parser("route", help="show which routing rule fires for each series of a study, "
                           "which series each protocol would run on, and why",
                           formatter_class=ProtocolsHelpFormatter)
    add_node_options(route)
    route.add_argument("inputs", nargs="+", metavar="FILES_OR_DIRS")
    route.add_argument("--json", action="store_true")
    route.add_argument("--explain", action="store_true", help="also every rule checked, and why")
    route.set_defaults(func=cmd_route)

    check = sub.add_parser("check-config", help="validate configuration files (one line each)")
    check.add_argument("files", nargs="*", metavar="FILE")
    check.add_argument("--show", action="store_true", help="also print the resolved settings")
    check.add_argument("--reference", action="store_true", help="print the settings reference")
    check.set_defaults(func=cmd_check_config)

    demo = sub.add_parser("demo", help="send a real CT slice through a node to a local PACS")
    demo.add_argument(
        "--work-dir", help="directory for the demo's node, PACS and demo.log (default: a "
        "temporary directory, deleted at the end unless --keep)")
    demo.add_argument("--keep", action="store_true",
                      help="keep the temporary work directory (to run `ainode jobs show` on it)")
    demo.add_argument(
        "--pacs",
        choices=["auto", "orthanc", "builtin"],
        default="auto",
        help="local PACS: Orthanc, the built-in Storage SCP, or auto (Orthanc when installed)",
    )
    demo.add_argument("--verbose", "-v", action="store_true",
                      help="log lines on the terminal instead of demo.log")
    demo.set_defaults(func=cmd_demo)

    # -- models, train, evaluate (command functions in node.cli.models, node.cli.training) --
    models = sub.add_parser("models", help="list, show, install and verify trained models")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    models_list = models_sub.add_parser("list", help="shipped and installed models")
    add_node_options(models_list)
    models_list.add_argument("--json", action="store_true")
    models_list.set_defaults(func=cmd_models_list)
    models_show = models_sub.add_parser("show", help="a model's card, weights verified")
    add_node_options(models_show)
    models_show.add_argument("name")
    models_show.add_argument("--json", action="store_true")
    models_show.set_defaults(func=cmd_models_show)
    models_install = models_sub.add_parser("install", help="install a model directory or archive")
    add_node_options(models_install)
    models_install.add_argument("source", metavar="DIR_OR_ARCHIVE")
    models_install.add_argument("--replace", action="store_true", help="replace a model of that name")
    models_install.set_defaults(func=cmd_models_install)
    models_verify = models_sub.add_parser("verify", help="check cards and weights sha256")
    add_node_options(models_verify)
    models_verify.add_argument("names", nargs="*", metavar="NAME")
    models_verify.set_defaults(func=cmd_models_verify)

    train = sub.add_parser("train", help="train a protocol's networks and write a model directory",
                           formatter_class=TrainHelpFormatter)
    train.add_argument("protocol", help="a registered protocol with a trainer (listed below)")
    train.add_argument("--phantom", action="store_true", help="train on digital phantoms")
    train.add_argument("--data", metavar="DIR", help="labelled data: NIfTI pairs or DICOM+SEG")
    train.add_argument("--out", required=True, metavar="MODEL_DIR")
    train.add_argument("--name", help="model name in the card (default: a short protocol name + -phantom-local with --phantom, else + -local, e.g. chest-phantom-local)")
    train.add_argument("--model-version", default="0.1.0", help="model version in the card")
    train.add_argument("--iterations", type=int, default=300, help="iterations per network")
    train.add_argument("--level-iterations", type=int, help="iterations of the level network")
    train.add_argument("--batch-size", type=int, default=4)
    train.add_argument("--cases", type=int, default=12, help="phantom training cases")
    train.add_argument("--eval-cases", type=int, default=4, help="held-out phantom cases")
    train.add_argument("--phantom-size", choices=["standard", "small"], default="standard")
    train.add_argument("--level-spacing-mm", type=float, default=2.0,
                       help="MIP pixel size of the level network (the study: 1 mm)")
    train.add_argument("--val-every", type=int, default=50)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    train.add_argument("--resume", action="store_true", help="continue from out/checkpoints")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a model on phantoms or labelled data",
                              formatter_class=EvaluateHelpFormatter)
    add_node_options(evaluate)
    evaluate.add_argument("model", metavar="MODEL_DIR_OR_NAME")
    evaluate.add_argument("--phantom", action="store_true")
    evaluate.add_argument("--data", metavar="DIR")
    evaluate.add_argument("--cases", type=int, default=4, help="phantom cases")
    evaluate.add_argument("--phantom-size", choices=["standard", "small"], default="standard")
    evaluate.add_argument("--report", metavar="CSV", help="per-case report")
    evaluate.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    evaluate.set_defaults(func=cmd_evaluate)

    purge = sub.add_parser(
        "purge", help="delete received instances and outputs of jobs finished long ago"
    )
    add_node_options(purge)
    purge.add_argument(
        "--older-than", required=True, metavar="AGE",
        help="age since the job finished: a number and w/d/h/m/s, e.g. 30d",
    )
    purge.add_argument("--dry-run", action="store_true", help="only report what would go")
    purge.add_argument("--json", action="store_true", help="print the report as JSON")
    purge.set_defaults(func=cmd_purge)

    worker = sub.add_parser(
        "worker", help="run jobs from the RabbitMQ queues (scale-out, runner: celery)"
    )
    add_node_options(worker)
    worker.add_argument(
        "--queues", help="comma-separated queues to take jobs from, e.g. gpu,cpu (default: all configured)"
    )
    worker.add_argument("--broker-url", help="RabbitMQ URL (default: celery.broker_url)")
    worker.add_argument("--name", help="worker name recorded in the jobs (default host:pid/celery)")
    worker.set_defaults(func=cmd_worker)

    add_web_parsers(sub, add_node_options)  # users add|list|remove, dashboard
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ainode``; returns the exit status.

    A closed pipe (``ainode check-config --show | head``) ends the command quietly with the
    status of a process killed by SIGPIPE (141), as ``cat`` would; Ctrl-C ends it with 130.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AINodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
