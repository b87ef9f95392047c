"""What every ``ainode`` command shares: exit codes, logging, the node options and what they open.

How a command finds the node it manages (the same for every command; README, docs/configuration.md):

1. the configuration file: ``--config FILE``, else ``$AINODE_CONFIG``, else none;
2. the data directory: ``--data-dir DIR``, else ``$AINODE_DATA_DIR``, else ``data_dir`` in that
   configuration file, else ``./ainode-data`` (relative to the current directory);
3. the job database: ``--database-url``, else ``$AINODE_DATABASE_URL``, else ``database_url`` in
   the file, else ``ainode.sqlite3`` in the data directory.

``ainode serve`` writes nothing global (no file in the home directory, nothing in /etc): the
commands that follow find the same node because they are given the same file or directory,
typically by ``export AINODE_CONFIG=/etc/ainode/ainode.yaml`` (or ``AINODE_DATA_DIR``) once.
"""

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
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of our output went away (`| head`)

FIND_NODE_HINT = (
    "give the node's configuration with --config or AINODE_CONFIG, or its data directory with "
    "--data-dir or AINODE_DATA_DIR (e.g. export AINODE_DATA_DIR=/var/lib/ainode), the same as "
    "`ainode serve` was given"
)


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
    parser.add_argument(
        "--data-dir",
        help="data directory (default: $AINODE_DATA_DIR, else data_dir of the configuration, "
        "else ./ainode-data)",
    )
    parser.add_argument(
        "--database-url",
        help="job database URL (default: $AINODE_DATABASE_URL, else SQLite in the data directory)",
    )


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
            raise ConfigError(f"no job database at {path}: {FIND_NODE_HINT}")
    return JobDatabase(url)


def check_ports_free(settings: Any) -> None:
    """Check that the node's listener ports can be bound, before anything is created on disk.

    Binds and closes a TCP socket on ``settings.host`` at ``settings.port`` (unless
    ``tls.tls_only``) and at ``settings.tls.port`` when set, with ``SO_REUSEADDR`` as the listener
    itself uses, so a port in TIME_WAIT is not reported busy.

    Raises
    ------
    ConfigError
        If a port is in use or not allowed (e.g. below 1024 without privileges), naming the port
        and what to do.
    """
    import socket

    ports = [] if settings.tls.tls_only else [("DICOM", settings.port)]
    if settings.tls.port is not None:
        ports.append(("DICOM TLS", settings.tls.port))
    for what, port in ports:
        try:
            infos = socket.getaddrinfo(settings.host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ConfigError(f"listener address {settings.host!r} does not resolve: {exc}") from exc
        family, kind, proto, _name, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on {settings.host}:{port} ({what} port): {exc.strerror}; "
                    "another process (another node?) may hold it: stop it or choose another "
                    "--port. Nothing was created."
                ) from exc


def progress(iterable: Any = None, **kwargs: Any) -> Any:
    """A tqdm progress bar on standard error, shown only when standard error is a terminal.

    Parameters
    ----------
    iterable : iterable, optional
        What to iterate over; keyword arguments go to :class:`tqdm.tqdm` (``desc``, ``total``,
        ``unit``).
    """
    from tqdm import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("disable", None)  # None: off when the stream is not a terminal (CI logs)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)


__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "FIND_NODE_HINT",
    "add_node_options",
    "check_ports_free",
    "configure_logging",
    "load_cli_settings",
    "open_database",
    "progress",
]
