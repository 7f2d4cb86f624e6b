"""The outbox: messages to Slack (and email) written in the same transaction as the change they report,
delivered at least once, in order per key, by the dispatcher.

`write` enqueues (inside a service's transaction), `dispatcher` delivers, `sql` holds the statements both
use, `keys` the ordering keys, `prune` the clean-up of delivered rows, `delivery` the pacing of deliveries.
"""
