"""Side-by-side benchmark of otpgate and the Node service it replaces.

``python -m bench`` (or ``make bench``) starts everything on loopback, drives
both services with the same load, and prints one table. See bench/README.md.
"""
