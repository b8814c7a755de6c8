"""Plain-Python core: codes, phone numbers, policies, limits and the use cases.

Nothing in this package does I/O or knows about HTTP. It defines the ports it
needs (``ports.py``: the store and the SMS sender) and the adapters in
``otpgate.store`` and ``otpgate.delivery`` implement them; an import-linter contract
(``make lint``) keeps every dependency pointing inward.
"""
