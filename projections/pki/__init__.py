"""The internal PKI's read side: CAs, roles, certificates and CRLs (scaivault.domain.pki)."""
