"""Subscriber imports from CSV: the service (accept, run, report), reading the file, loading the rows, and the
PostgreSQL fast path that stages the file over COPY."""
