"""Webhooks that vendors send to ``jitbot serve`` (each verified before anything in it is read)."""
