"""The read side of the PKI's CSR requests and trust anchors (scaivault.domain.pki_requests)."""
