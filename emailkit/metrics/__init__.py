"""Prometheus metrics: what emailkit counts (``record``), the families and their bounded label values
(``families``), and how a process shares and exposes them (``process``).

A leaf: it imports nothing else of emailkit, so the domain records through it without knowing any adapter, and
the database layer reports its pool. Nothing here touches prometheus-client before the first figure is
recorded or read: the client decides at import whether values live in this process's memory or in files shared
by every process of a command (``PROMETHEUS_MULTIPROC_DIR``), and ``process.prepare_directory`` must have
decided that first.
"""
