"""What the sidecar saw: events, request records, stats, metrics, its log, the fleet."""
