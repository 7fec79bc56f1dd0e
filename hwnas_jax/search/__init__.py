"""Search: the method interface (bottom), baselines, deployment of trained controllers, the protocol, the registry (top)."""
