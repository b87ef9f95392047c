"""``ainode train`` and ``ainode evaluate``: the command functions (parsers in
:func:`node.cli.build_parser`).

:mod:`training` (torch, MONAI) is imported when a command runs, so that ``ainode --help`` stays
instant; no other module of ``node`` imports :mod:`training`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from node.presentation import dash


def protocols_section(attribute: str | None, heading: str) -> str:
    """Help text listing every registered protocol (from :mod:`pipelines.registry`, plug-ins
    included); with ``attribute`` (e.g. ``"trainer"``), those whose spec declares none are
    marked. Plug-ins that failed to load are named with the reason."""
    from pipelines.registry import load_errors, protocols

    specs = list(protocols().values())
    width = max((len(s.name) for s in specs), default=0)
    lines = [f"{heading}:"]
    for spec in specs:
        note = ""
        if attribute is not None and not getattr(spec, attribute, None):
            note = f" [no {attribute}: reference method only]"
        lines.append(f"  {spec.name:<{width}}  {spec.title}{note}")
    if not specs:
        lines.append("  (none)")
    for entry, reason in load_errors().items():
        lines.append(f"  plug-in {entry} not loaded: {reason}")
    return "\n".join(lines)


class _ProtocolsHelpFormatter(argparse.HelpFormatter):
    """Appends the registered protocols to a command's help, read when the help is shown (so
    that building the parser stays instant)."""

    attribute: str | None = None
    heading = "protocols"

    def format_help(self) -> str:
        return super().format_help() + "\n" + protocols_section(self.attribute, self.heading) + "\n"


class TrainHelpFormatter(_ProtocolsHelpFormatter):
    """``ainode train --help``: the registered protocols, those without a trainer marked."""

    attribute = "trainer"
    heading = "registered protocols"


class EvaluateHelpFormatter(_ProtocolsHelpFormatter):
    """``ainode evaluate --help``: the registered protocols, those without an evaluator marked."""

    attribute = "evaluator"
    heading = "registered protocols"


class ProtocolsHelpFormatter(_ProtocolsHelpFormatter):
    """Any command's help: every registered protocol."""

    heading = "registered protocols"


def cmd_train(args: Any) -> int:
    """``ainode train PROTOCOL (--phantom | --data DIR) --out DIR``."""
    from training.train import TrainConfig, train

    if bool(args.phantom) == bool(args.data):
        print("give exactly one of --phantom or --data DIR", file=sys.stderr)
        return 2
    config = TrainConfig(
        protocol=args.protocol, out_dir=Path(args.out),
        data_dir=Path(args.data) if args.data else None, name=args.name,
        version=args.model_version, iterations=args.iterations,
        level_iterations=args.level_iterations, batch_size=args.batch_size,
        train_cases=args.cases, eval_cases=args.eval_cases, phantom_size=args.phantom_size,
        seed=args.seed, device=args.device, resume=args.resume,
        val_every=max(1, min(args.val_every, args.iterations)),
        level_spacing_mm=args.level_spacing_mm,
    )
    logging.basicConfig(level=logging.WARNING)

    def log(message: str) -> None:
        # tqdm.write prints above the progress bar of the network being trained.
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)

    out = train(config, log)
    print(f"model written to {out}; install with: ainode models install {out}")
    return 0


def cmd_evaluate(args: Any) -> int:
    """``ainode evaluate MODEL (--phantom [--cases N] | --data DIR) [--report CSV]``."""
    from ainode_core.errors import ModelError
    from models.registry import default_install_dir, get_model, load_entry
    from training.evaluate import evaluate_model_dir, phantom_cases, user_cases

    model_dir = Path(args.model)
    if not model_dir.is_dir():
        install_dir = default_install_dir(args.data_dir) if args.data_dir else None
        model_dir = get_model(args.model, install_dir).path
    if bool(args.phantom) == bool(args.data):
        print("give exactly one of --phantom or --data DIR", file=sys.stderr)
        return 2
    protocol = load_entry(model_dir, verify=False).card.protocol
    try:
        if args.phantom:
            cases = phantom_cases(protocol, args.cases, args.phantom_size)
        else:
            cases = user_cases(protocol, Path(args.data))
    except ModelError as error:
        print(f"ainode evaluate: {error}", file=sys.stderr)
        return 2
    report = evaluate_model_dir(model_dir, cases, args.report, device=args.device, protocol=protocol)
    for key, value in report.metrics.items():
        print(f"{key.replace('_', ' ')}: {dash(value, decimals=4)}")
    if args.report:
        print(f"per-case report: {args.report}")
    return 0


__all__ = ["cmd_evaluate", "cmd_train"]
