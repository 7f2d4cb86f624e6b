"""Notification channels besides Slack: email by SMTP, and the wrapper that chooses between them."""
