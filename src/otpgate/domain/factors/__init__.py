"""Second factors that cost no message: authenticator apps (TOTP) and recovery codes.

Plain Python, no I/O, as the rest of the domain: ``values`` (an identity, a factor and
its TOTP settings), ``ports`` (the ``CredentialStore`` the adapter in
``otpgate.credentials`` implements), ``totp`` (RFC 6238 codes, each time step accepted
once), ``recovery`` (one-use codes, kept only as keyed hashes), ``errors`` and
``service`` (the use cases).
"""
