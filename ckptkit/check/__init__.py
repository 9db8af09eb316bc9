"""inspect, verify and checksums: reading a checkpoint to report on it (no torch)."""
