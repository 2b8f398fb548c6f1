"""reconciler: GitOps for machine-learning model fleets.

The command line (``reconciler``) is the product; as a library, the package declares only its
version and the typed errors every layer raises (``reconciler.errors``): a caller tells ``Transient``
(retried) from ``Stalled`` (waits for a change) by class, and every reason they carry is a constant
of ``reconciler.reasons``. The subpackages declare their own ``__all__``; README's "Public
surface" lists them all."""

from reconciler import reasons
from reconciler.errors import ReconcilerError, Stalled, Transient

__version__ = "0.1.0"

__all__ = ["ReconcilerError", "Stalled", "Transient", "__version__", "reasons"]
