"""The registry: the database of cases, photos, templates and keys (the source of truth)."""
