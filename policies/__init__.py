"""NetworkPolicy enrichment, audit findings and their reports; the controllers in `policies.controllers`."""
