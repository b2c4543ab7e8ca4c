"""Shippers: read traffic from logs and packets, parse it, and send Records into a Sink."""
