"""The session loop shared by backtests and paper trading."""
