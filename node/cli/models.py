"""``ainode models list|show|install|verify``: the command functions (parsers in
:func:`node.cli.build_parser`).

No torch import here: listing, showing, installing and verifying models only read cards and hash
weights files. :mod:`models.registry` (pydicom) is imported when a command runs, so that
``ainode --help`` stays instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ainode_core.errors import ModelError
from node.cli.common import load_cli_settings
from node.presentation import dash


def _install_dir(args: Any) -> Path:
    return Path(load_cli_settings(args).models_install_dir)


def _summary(entry: Any) -> dict[str, Any]:
    card = entry.card
    return {
        "name": card.name,
        "version": card.version,
        "protocol": card.protocol,
        "validation_status": card.validation_status.value,
        "origin": entry.origin,
        "networks": [f"{n.role}: {n.architecture}" for n in card.networks],
        "primary_metric": card.evaluation.get("primary_metric"),
        "primary_metric_value": card.primary_metric,
        "measured_on": card.measured_on,
        "path": str(entry.path),
    }


def cmd_models_list(args: Any) -> int:
    """List shipped and installed models (and directories refused, with the reason)."""
    from models.registry import discover

    found = discover(_install_dir(args))
    protocols = _protocol_rows(args, found.entries)
    if args.json:
        print(json.dumps({"models": [_summary(e) for e in found.entries],
                          "refused": [{"path": str(p), "reason": r} for p, r in found.problems],
                          "protocols": protocols},
                         indent=2))
        return 0
    print(f"{'NAME':<24} {'VERSION':<8} {'PROTOCOL':<26} {'STATUS':<13} {'ORIGIN':<9} NETWORKS")
    for entry in found.entries:
        s = _summary(entry)
        print(f"{s['name']:<24} {s['version']:<8} {s['protocol']:<26} "
              f"{s['validation_status']:<13} {s['origin']:<9} {', '.join(s['networks'])}")
        print(f"{'':<24} {_score_line(s)}")
    for path, reason in found.problems:
        print(f"refused: {path}: {reason}", file=sys.stderr)
    print()
    print(f"{'PROTOCOL':<26} {'SELECTED':<16} {'MODELS':>6}  NETWORKS / TRAINER")
    for row in protocols:
        trainer = "trainer" if row["trainer"] else "no trainer"
        networks = "networks" if row["networks"] else "no networks (reference method only)"
        print(f"{row['name']:<26} {row['selected']:<16} {row['models']:>6}  {networks}; {trainer}")
    return 0


def _protocol_rows(args: Any, entries: list[Any]) -> list[dict[str, Any]]:
    """One row per registered protocol (plug-ins included): the configured selection, how many
    of the listed models serve it, and whether its spec declares networks and a trainer."""
    from pipelines.registry import protocols

    models = load_cli_settings(args).models
    return [
        {
            "name": name,
            "selected": models.selection(name),
            "models": sum(1 for e in entries if e.card.protocol == name),
            "networks": bool(spec.networks),
            "trainer": bool(spec.trainer),
        }
        for name, spec in protocols().items()
    ]


def _score_line(summary: dict[str, Any]) -> str:
    """``score: dice mean 0.790, measured on digital phantoms: 4 cases, not patient images``."""
    if summary["primary_metric_value"] is None:
        return f"score: none recorded ({summary['measured_on']})"
    name = str(summary["primary_metric"]).replace("_", " ")
    return (f"score: {name} {summary['primary_metric_value']:.3f}, "
            f"measured on {summary['measured_on']}")


def cmd_models_show(args: Any) -> int:
    """Print a model's card (and whether its weights verify)."""
    from models.registry import get_model, verify_model

    entry = get_model(args.name, _install_dir(args), verify=False)
    try:
        verify_model(entry)
        verified = "ok"
    except ModelError as exc:
        verified = f"FAILED: {exc}"
    data = entry.card.to_dict()
    if args.json:
        print(json.dumps({"path": str(entry.path), "origin": entry.origin,
                          "weights_verified": verified, "card": data}, indent=2))
        return 0 if verified == "ok" else 1
    card = entry.card
    print(f"{card.name} {card.version} ({card.protocol}), {card.validation_status.value}")
    print(f"path:            {entry.path} ({entry.origin})")
    print(f"weights sha256:  {verified}")
    print(f"task:            {card.task}")
    print(f"intended use:    {card.intended_use}")
    print(f"trained on:      {card.training_data.get('description', 'not stated')}")
    print(f"evaluated on:    {card.evaluation.get('set', 'not stated')} ({card.measured_on})")
    for key, value in card.evaluation.get("metrics", {}).items():
        print(f"  {key.replace('_', ' ')}: {dash(value, decimals=4)}")
    for network in card.networks:
        print(f"network:         {network.role}: {network.architecture} ({network.weights})")
    print(f"(the whole card: ainode models show {card.name} --json)")
    return 0 if verified == "ok" else 1


def cmd_models_install(args: Any) -> int:
    """Install a model directory or archive into the install directory."""
    from models.registry import install_model

    entry = install_model(args.source, _install_dir(args), replace=args.replace)
    print(f"installed {entry.name} {entry.card.version} ({entry.card.protocol}, "
          f"{entry.card.validation_status.value}) at {entry.path}")
    return 0


def cmd_models_verify(args: Any) -> int:
    """Check every model's card and weights (or only the named ones); exit 1 on any failure."""
    from models.registry import discover, verify_model

    found = discover(_install_dir(args))
    failures = 0
    names = set(args.names or [])
    for entry in found.entries:
        if names and entry.name not in names:
            continue
        try:
            verify_model(entry)
            print(f"ok      {entry.name} {entry.card.version} ({entry.path})")
        except ModelError as exc:
            failures += 1
            print(f"FAILED  {entry.name}: {exc}")
    for path, reason in found.problems:
        if names and path.name not in names:
            continue
        failures += 1
        print(f"FAILED  {path}: {reason}")
    missing = names - {e.name for e in found.entries} - {p.name for p, _ in found.problems}
    for name in sorted(missing):
        failures += 1
        print(f"FAILED  {name}: no such model")
    return 1 if failures else 0
