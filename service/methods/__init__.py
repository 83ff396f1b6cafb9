"""Explanation methods, chosen by name; each runs on the one :class:`~service.inference.Inference` of a request.

A new method is one module here with a class that follows :class:`~service.methods.base.Method`,
and one line below registering it. :class:`~service.explainer.Explainer` builds every registered
method once at start-up; one without a route of its own is served at ``POST /methods/{name}``.
"""

from __future__ import annotations

from service.methods.base import AnyMethod, Method, MethodContext
from service.registry import Registry

__all__ = ["METHODS", "AnyMethod", "Method", "MethodContext"]

METHODS: Registry[type[AnyMethod]] = Registry("method")
METHODS.register("deepminer", "service.methods.deepminer:DeepMiner")  # CAM and unit influence (the paper)
METHODS.register("region_query", "service.methods.region_query:RegionQuery")  # Lu & Perer
