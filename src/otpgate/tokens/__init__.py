"""Signed proof of a verify: ES256 tokens, and the public keys that check them.

``keys.py`` reads (or, in development, creates) the signing keys and builds the
JWKS document; ``signer.py`` implements the domain's ``TokenSigner`` port.
"""
