"""What every ``ainode`` command shares: exit codes, logging, the node options and what they open."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ainode_core.errors import ConfigError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def configure_logging(level: str, log_phi: bool = False) -> None:
    """Log to standard error at ``level`` (only the CLI configures handlers).

    Parameters
    ----------
    level : str
        A :mod:`logging` level name (``"INFO"``, ``"warning"``, ...); unknown names give INFO.
    log_phi : bool
        Leave pynetdicom's identifier logging (patient name and ID of every dataset) on.
    """
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pynetdicom logs identifiers (patient name/ID) of every dataset at DEBUG/INFO: keep it quiet
    # unless the admin explicitly allows PHI in the logs.
    if not log_phi:
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def add_node_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--config``, ``--data-dir`` and ``--database-url`` to a sub-command's parser."""
    parser.add_argument("--config", help="YAML configuration file (default: $AINODE_CONFIG)")
    parser.add_argument("--data-dir", help="data directory (default: ./ainode-data)")
    parser.add_argument("--database-url", help="job database URL (default: SQLite in the data dir)")


def load_cli_settings(args: argparse.Namespace, **extra: Any) -> Any:
    """The node's :class:`node.config.Settings` from the node options of ``args`` and ``extra``.

    Raises
    ------
    ConfigError
        If the configuration file or an environment variable is invalid.
    """
    from node.config import load_settings

    overrides = {
        "data_dir": Path(args.data_dir) if getattr(args, "data_dir", None) else None,
        "database_url": getattr(args, "database_url", None),
        **extra,
    }
    return load_settings(getattr(args, "config", None), **overrides)


def open_database(args: argparse.Namespace) -> Any:
    """The node's existing job database (:class:`storage.database.JobDatabase`).

    Raises
    ------
    ConfigError
        If the SQLite database file does not exist (wrong ``--data-dir`` or ``--config``).
    """
    from storage.database import JobDatabase

    settings = load_cli_settings(args)
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise ConfigError(
                f"no job database at {path}: give the node's data directory with --data-dir, "
                "or its configuration with --config (or AINODE_CONFIG)"
            )
    return JobDatabase(url)


__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "add_node_options",
    "configure_logging",
    "load_cli_settings",
    "open_database",
]
