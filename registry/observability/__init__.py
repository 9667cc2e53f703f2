"""What operators watch the registry with: metrics (metrics.py, one collector registry), request ids,
access lines and logs (traffic.py, logs.py), health checks and endpoints (health.py), and their wiring
into the server (server.py)."""
