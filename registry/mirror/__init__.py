"""Pull-through mirroring of upstream registries, side by side with local repositories."""
