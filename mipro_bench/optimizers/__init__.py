"""Optimizer adapters: one file each, behind the protocol in `base`."""
