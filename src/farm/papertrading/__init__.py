"""Paper trading: accounts held by the host (sessions on the live feed come next)."""
