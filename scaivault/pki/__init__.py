"""The X.509 toolkit of the internal CA: keys, CA and leaf certificates, CSRs, CRLs and OCSP answers.

Pure functions over ``cryptography`` objects: no I/O and no clock (every time is a parameter), so the aggregates
and commands that decide what to issue stay the only place where state lives. Nothing here logs, and no error
message carries key material. ASN.1, signatures and parsing are all left to ``cryptography``.
"""
