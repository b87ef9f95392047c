"""Helpers shared by the benchmark scripts: peak memory of this process, the measuring child
process, and the report printout.

Each benchmark measures in a fresh child process (``script --measure ARG``) so that its peak
memory is that of the measured work only. The peak is ``VmHWM`` of ``/proc/self/status`` (the
high-water mark of this process image): ``getrusage``'s ``ru_maxrss`` is not used because Linux
carries it over from the parent across fork + exec, so it would report the parent's peak when
the parent (e.g. the phantom writer) used more memory.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any


def progress(iterable: Any = None, **kwargs: Any) -> Any:
    """A tqdm progress bar on standard error, shown only when it is a terminal (quiet in CI logs).

    Keyword arguments go to :class:`tqdm.tqdm` (``desc``, ``total``, ``unit``).
    """
    from tqdm import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("disable", None)  # None: off when the stream is not a TTY
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)


def peak_rss_kib() -> int:
    """Peak resident set size of this process image, KiB (VmHWM; ``getrusage`` as a fallback
    where ``/proc`` is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def peak_rss_mib() -> float:
    """:func:`peak_rss_kib` in MiB, one decimal."""
    return round(peak_rss_kib() / 1024, 1)


def run_child(script: str | Path, *args: str) -> dict[str, Any]:
    """Run ``python script *args`` in a fresh process and return the JSON object it prints last.

    Raises
    ------
    RuntimeError
        The child failed; the message ends with its standard error.
    """
    child = subprocess.run([sys.executable, str(Path(script).resolve()), *args],
                           check=False, capture_output=True, text=True)
    if child.returncode != 0:
        raise RuntimeError(f"{Path(script).name} {' '.join(args)} failed with exit status "
                           f"{child.returncode}:\n{child.stderr[-3000:]}")
    return dict(json.loads(child.stdout.strip().splitlines()[-1]))


def print_report(title: str, report: dict[str, Any], as_json: bool) -> None:
    """Print ``report`` as indented JSON, or as a two-column table under ``title``."""
    if as_json:
        print(json.dumps(report, indent=2))
        return
    width = max(len(k) for k in report)
    print(title)
    for key, value in report.items():
        print(f"  {key:<{width}}  {value}")
