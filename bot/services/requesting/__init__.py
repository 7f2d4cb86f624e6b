"""Requests and their approvals: submitting, deciding layer by layer, reminders, approved requests that
have not started yet, and the reads the notifier makes of approval state."""
