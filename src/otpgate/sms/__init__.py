"""How a code reaches a phone: one interface, one module per provider."""
