"""papertrading."""
