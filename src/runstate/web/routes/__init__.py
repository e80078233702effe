"""The web routes, one module per face: pages (sign-in and the monitor list),
monitor_pages (a monitor, its forms and the alert channels), status_admin (managing status
pages), status (public status pages, their feeds and summary.json) and badges."""
