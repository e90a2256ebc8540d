"""LM endpoints: settings, the local gateway (simulated or forwarding), usage, clients."""
