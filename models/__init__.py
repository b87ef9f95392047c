"""Trained networks of ainode: model cards, registry, MONAI architectures and inference.

See docs/models.md. Pipelines never import this package; the node loads a configured model here
(:func:`models.inference.load_configured_model`) and passes it to the pipeline as a
:class:`pipelines.types.LearnedModel`.
"""
