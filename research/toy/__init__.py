"""The toy world's training recipe and its levers: see research/README.md."""
