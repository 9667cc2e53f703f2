"""Authentication (htpasswd Basic, Docker registry tokens) and per-repository access control."""
