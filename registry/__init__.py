"""An OCI Distribution (v1.1) registry server."""
