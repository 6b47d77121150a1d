"""Cross-age matching evaluation: ``homeward evaluate`` runs a labelled dataset through the
service's own enroll and match code and reports identification (CMC) and verification
figures."""
