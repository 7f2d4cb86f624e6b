"""The signed event stream: every audit event sent, in order, to the SIEM sinks the policy names.

The audit log is the queue: its ids grow in commit order (the chain is linked under one lock, migration
0007), so each sink keeps a cursor — the id of the last event it took — and a down sink simply falls
behind, for as long as it is down, without holding up anything else (its own task, not the Slack
outbox). ``cursor.py`` keeps the cursors and the lease that gives each sink one sender across
replicas; ``cloudevent.py`` turns an event into a CloudEvents 1.0 JSON event; ``webhook.py`` sends it
signed per Standard Webhooks; ``syslog.py`` as RFC 5424 over TLS (RFC 5425); ``stream.py`` runs the
sinks; ``metrics.py`` reports each sink's lag; ``commands.py`` is ``jitbot events replay``.

Errors: a sink raises ``bot.services.outbox.delivery.RetryLater`` when it could not take an event (the stream
backs off and sends it again, from that event on, in order).
"""
