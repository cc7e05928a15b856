"""The run loop and what it runs: one batch through the rules and the state, the expiry sweeper,
the timers, and the watchdog of blocked Kafka calls."""
