"""Paper trading: accounts held by the host, and sessions of agents on the live feed."""
