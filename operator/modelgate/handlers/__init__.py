"""kopf handlers: parse -> call the core -> apply actions -> patch status.

Run with ``python -m modelgate`` or ``kopf run -m modelgate.handlers``.
Decisions live in :mod:`modelgate.promotion` (the same core local mode
drives); this module only translates between Kubernetes and that core.

Settings chosen deliberately (see :func:`configure`):
- progress and diff-base are kept in ``modelgate.dev/*`` annotations, not in
  ``status.kopf`` (structural schemas would prune undeclared status fields);
- the only finalizer is on ModelReleases, to delete their training Jobs;
- watches are ended by the server every 5 minutes and re-listed, so a lost
  event is recovered within that time, and every release is also re-checked
  on a timer (``MODELGATE_RESYNC_SECONDS``) because reconciliation is
  level-based;
- peering (unless ``--standalone``) makes sure two replicas never both act;
- one reconciliation per release at a time in this process (a lock), and
  the core never repeats a side effect that it can already observe.
"""

from modelgate.handlers import environment, lifecycle, modelrelease, qualitygate
from modelgate.handlers.common import (
    ENVIRONMENTS,
    GATES,
    RELEASES,
    Runtime,
    list_environments,
    logger,
    reset_runtime,
    runtime,
)
from modelgate.handlers.lifecycle import webhook_server
from modelgate.handlers.modelrelease import log_action, reconcile_release
from modelgate.settings import OperatorSettings

__all__ = [
    "ENVIRONMENTS",
    "GATES",
    "RELEASES",
    "Runtime",
    "environment",
    "lifecycle",
    "list_environments",
    "log_action",
    "logger",
    "modelrelease",
    "qualitygate",
    "reconcile_release",
    "reset_runtime",
    "runtime",
    "webhook_server",
]

# Admission webhooks are registered only where they are served: kopf refuses
# to start with admission handlers but no webhook server.
if OperatorSettings.from_env().webhook_port:
    from modelgate.handlers import admission  # noqa: F401  (registers the webhooks)
