"""One module per resource. Each router carries the full path (`API_PREFIX` included), so the
route a request matched names its whole template, which the HTTP metrics use as a label."""

API_PREFIX = "/api/v1"
