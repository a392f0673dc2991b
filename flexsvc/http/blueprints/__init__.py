"""HTTP blueprints: they parse and validate, call the data layer, and shape responses."""
