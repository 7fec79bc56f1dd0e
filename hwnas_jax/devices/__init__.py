"""Devices: anything with `measure(index) -> ms` (tables, noisy tables, the host, synthetic devices), and what noisy probes say."""
