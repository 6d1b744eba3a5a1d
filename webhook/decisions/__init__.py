"""The check catalogue and the decisions: inject, validate, allocation, explain; pure functions of a request and a snapshot."""
