"""HTTP handlers: thin views over the domain, one module per resource."""
