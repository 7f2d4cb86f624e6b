"""What operators watch: health probes, Prometheus metrics and the log format."""
