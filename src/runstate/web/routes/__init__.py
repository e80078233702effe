"""The web routes, one module per face: pages (the dashboard), status (public status pages
and their feeds), badges."""
