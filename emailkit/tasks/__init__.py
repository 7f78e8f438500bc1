"""Background work: the Dramatiq broker, thin async actors ("jobs") over domain services, pub/sub.

Jobs are declared with :func:`emailkit.tasks.broker.registry.job` in the modules listed in
``JOB_MODULES``; :func:`emailkit.tasks.broker.factory.configure_broker` imports those modules and binds every
job to the broker it builds, so nothing touches a broker at import time.
"""

from __future__ import annotations

# Modules whose @job functions every broker (API and worker processes alike) declares.
JOB_MODULES: tuple[str, ...] = (
    "emailkit.tasks.campaigns",
    "emailkit.tasks.flows",
    "emailkit.tasks.imports",
    "emailkit.tasks.webhooks",
)
