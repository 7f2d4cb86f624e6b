"""The worker and its schedule: the tick that finds due work, scheduled jobs, recovery after a restart,
the clock-skew guard and the ticket watch."""
