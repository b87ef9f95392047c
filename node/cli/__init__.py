"""The ``ainode`` command line: every command-line function of ainode lives in this package.

- :mod:`node.cli.parser` — the one parser (:func:`build_parser`), :func:`main`, and the node's own
  commands (serve, run, jobs, echo, route, check-config, demo, worker);
- :mod:`node.cli.common` — exit codes, logging set-up, the shared ``--config/--data-dir/
  --database-url`` options and the settings and job database they open;
- :mod:`node.cli.web` — ``users`` and ``dashboard``; :mod:`node.cli.models` — ``models``;
  :mod:`node.cli.training` — ``train`` and ``evaluate``; :mod:`node.cli.purge` — ``purge``.

The layers below (storage, models, training, pipelines) hold no command-line code and never import
this package. Heavy modules (numpy, highdicom, torch, MONAI) are imported inside the commands that
need them, so ``ainode --help`` and ``ainode jobs list`` start instantly.
"""

from node.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
