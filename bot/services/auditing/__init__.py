"""The tamper-evident audit log: the hash chain, its anchors outside the database, and their checks."""
