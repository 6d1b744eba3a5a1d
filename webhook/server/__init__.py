"""The HTTPS server: gunicorn over TLS, the Flask app that decodes, dispatches and encodes, and its settings."""
