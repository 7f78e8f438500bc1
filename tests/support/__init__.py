"""Real peers for tests: a counting SMTP sink, a private redis-server, `emailkit worker` processes."""
