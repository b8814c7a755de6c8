"""The thin HTTP layer: parse, call a use case, map the result to a response."""
