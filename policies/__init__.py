"""NetworkPolicy enrichment, the reconciler, and audit findings and reports."""
