"""The benchmark: the search space, its tables (latency, accuracy, proxies), the network and proxy scorers, and how proxies combine."""
