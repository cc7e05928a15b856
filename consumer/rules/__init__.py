"""The pure core: field validation (contract section 2) and the attribution rules (section 3)."""
