"""The shared kernel of ainode: what every layer may import, and which imports no other layer.

``ainode_core`` sits below ``pipelines``, ``models``, ``storage``, ``training`` and ``node`` (see
the "Layers" section of docs/decisions.md); it holds the exception hierarchy
(:mod:`ainode_core.errors`) and imports nothing of ainode.
"""
