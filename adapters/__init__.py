"""Adapters: the uniform model interface (:class:`~adapters.handle.ModelHandle`), model sources and
every lifecycle technique, one module per family under :mod:`adapters.techniques`.

Importing this package does not import torch; the modules that need it import it themselves.
"""
