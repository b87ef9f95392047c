"""The four protocols shipped with ainode, one module each exporting ``SPEC``
(:class:`pipelines.protocol.ProtocolSpec`).

They register under the entry-point group ``ainode.protocols`` in the root ``pyproject.toml``,
exactly as a site's plug-in package does; the core finds them only through
:mod:`pipelines.registry`. Each module is light (standard library, pydantic, YAML): its parameter
model, measurement table and default routing rules; the method itself is imported when it runs.
"""

from __future__ import annotations

from typing import Any

import yaml


def rules_from_yaml(text: str) -> tuple[dict[str, Any], ...]:
    """Default routing rules of a spec from a YAML list (the node's rule syntax plus ``stage``
    and ``order``, see :class:`pipelines.protocol.ProtocolSpec`)."""
    loaded = yaml.safe_load(text)
    if not isinstance(loaded, list):
        raise ValueError("default rules: expected a YAML list of rules")
    return tuple(dict(rule) for rule in loaded)
