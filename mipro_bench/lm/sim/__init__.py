"""The deterministic simulated LM (offline default): policy and its labels."""
