"""shadowtap: capture real HTTP traffic from logs and packets, replay it safely."""

__version__ = "0.1.0"
