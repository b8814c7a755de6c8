"""Alembic's scripts for the credential database (``otpgate migrate`` applies them).

A change to ``tables.py`` comes with a new script in ``versions/``, named
``NNNN_what.py``, whose ``down_revision`` is the previous one's ``revision``.
"""
