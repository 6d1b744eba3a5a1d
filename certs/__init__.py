"""Certificates for the webhook: CA, serving pair, rotation and caBundle sync."""
