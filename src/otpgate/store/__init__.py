"""Where codes and counters live: one interface, one module per backend."""
