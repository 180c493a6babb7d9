"""Reka's Vision API as this project uses it: the HTTP client, its errors, its models.
Imports `reka_ingest.core` only: the client never drags in the database."""
