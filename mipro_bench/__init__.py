"""mipro-bench: fair, pytest-native prompt-optimizer benchmarks on Banking77."""
