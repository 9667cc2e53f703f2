"""Maintenance of the store: garbage collection (gc, over inventory's bulk reads), what it would free and
who uses what (usage), integrity checks (verify), retention policies, and purging abandoned uploads."""
