"""Unlearning methods (one file each, registered in ``lumebench.registry.METHODS``) and the trainer.

Importing this package registers every method; add a new method's module to the list below.
"""

from lumebench.methods import ga, gd, kl, npo, npo_kl, npo_rt, rmu, simnpo  # noqa: F401  (registration)
