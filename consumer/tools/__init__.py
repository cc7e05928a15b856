"""The operator commands beside `leadattr run`: send, replay, clear-offset-floor."""
