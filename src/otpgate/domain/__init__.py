"""Plain-Python core: codes, phone numbers, policies and the two use cases.

Nothing in this package does I/O or knows about HTTP; it talks to the outside
world only through the small interfaces in ``otpgate.store``, ``otpgate.sms``.
"""
