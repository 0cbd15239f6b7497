"""Routing: model names to replicas, picking one per request, retries and health."""
