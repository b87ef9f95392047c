"""The measurement tables of the shipped protocols, one module each exporting ``MEASUREMENTS``
(a tuple of :class:`pipelines.protocol.MeasurementRow`).

They live apart from the specs (:mod:`pipelines.protocols`) because the methods read them too
(their key-image text, :mod:`pipelines.measurement_text`) and a method must not import its spec,
which imports the method when it runs. A plug-in package does the same in its own modules.
"""
