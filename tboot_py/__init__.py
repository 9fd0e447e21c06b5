"""tboot-py: measured launch and attestation toolkit."""

__version__ = "0.1.0"
