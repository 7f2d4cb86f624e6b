"""The playground: the real bot, a fake Slack workspace with a web page, SQLite and a demo policy."""
