"""``ainode purge``: retention by hand (the scheduled purge is :class:`storage.retention.RetentionScheduler`)."""

from __future__ import annotations

import argparse
import json
import sys

from node.cli.common import EXIT_OK, load_cli_settings, open_database


def cmd_purge(args: argparse.Namespace) -> int:
    """``ainode purge --older-than AGE [--dry-run] [--json]`` (see :func:`storage.retention.purge`)."""
    from storage.instance_store import InstanceStore
    from storage.retention import parse_age, purge

    older_than = parse_age(args.older_than)
    settings = load_cli_settings(args)
    database = open_database(args)
    try:
        store = InstanceStore(settings.data_dir)
        report = purge(database, store, older_than, dry_run=args.dry_run, progress=True)
    finally:
        database.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return EXIT_OK
    verb = "would delete" if report.dry_run else "deleted"
    print(
        f"{verb}: {report.instance_files} received instance file(s) of {len(report.series)} "
        f"series and {report.output_files} output file(s) of {len(report.jobs)} job(s), "
        f"{report.bytes / 1e6:.1f} MB (jobs finished before "
        f"{report.cutoff.isoformat(timespec='seconds')}Z)"
    )
    if report.kept_series:
        print(
            f"kept: the instances of {len(report.kept_series)} series that a newer or unfinished "
            "job still needs"
        )
    if report.jobs and len(report.jobs) <= 50:
        print("jobs: " + " ".join(str(j) for j in report.jobs), file=sys.stdout)
    return EXIT_OK


__all__ = ["cmd_purge"]
