"""Benchmark of this registry against CNCF Distribution (Debian's docker-registry): `python -m bench`."""
