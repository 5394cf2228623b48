"""Unlearning methods (one file each, registered in ``lumebench.registry.METHODS``) and the trainer.

The registry imports :mod:`lumebench.methods.catalog` (which imports every method) on first use.
"""
