"""The DeepMiner HTTP service: explained mammogram classifications and the unit-label API.

A request travels route (``service.api.routes``) → service object
(:class:`~service.explainer.Explainer`, :class:`~service.units.UnitCatalog`)
→ model backend (``service.backends``) or unit-label store (``annotations``).
"""
