"""Approval context from other tools: on-call schedules (PagerDuty) and tickets (Jira)."""
