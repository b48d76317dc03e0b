"""Helpers of the search API (Chalice packages this folder with app.py): request parsing, the error table,
health probes, the OpenAPI document and the web page."""
