"""The controllers: one process, one replica active by Lease, doing all the background work."""
