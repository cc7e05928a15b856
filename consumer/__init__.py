"""Lead attribution consumer: decode -> validate -> attribute -> state -> publish -> commit."""
