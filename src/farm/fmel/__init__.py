"""fmel."""
