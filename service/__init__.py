"""The CDS Hooks HTTP layer: auth, config, prefetch, validation, handlers (below server, above audit/governance)."""
