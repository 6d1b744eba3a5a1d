"""Cluster state: read from files or watched on the API server, the API client, the Lease and the access reviews."""
