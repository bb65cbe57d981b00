"""The Farm: backtest trading agents in a sandbox, explain every decision, rank them."""

__version__ = "0.1.0"
