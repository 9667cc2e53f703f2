"""The shared contract suite every storage backend must pass, below the HTTP layer."""
