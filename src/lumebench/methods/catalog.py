"""Every unlearning method, imported so that it registers in ``lumebench.registry.METHODS``.

Add a new method's module to the list below. (Kept out of ``lumebench.methods.__init__`` so that
``lume --help`` does not import torch.)
"""

from lumebench.methods import ga, gd, kl, npo, npo_kl, npo_rt, rmu, simnpo  # noqa: F401  (registration)
from lumebench.methods import ails_ntua, atyaephyra, idk_dpo, sha256, task_vector, undial, zjuklab  # noqa: F401
from lumebench.methods import ce_u, satimp, wga  # noqa: F401  (the field's since LUME, issue 24)
