"""Base models: the registry of named models (:mod:`.registry`), loading any model
(:func:`load_model`), and the from-scratch ``tiny`` model (:mod:`.tiny`)."""

from .loading import cache_root, load_model, model_spec_of, resolve_spec
from .registry import ModelSpec

__all__ = ["ModelSpec", "cache_root", "load_model", "model_spec_of", "resolve_spec"]
