"""Fixtures shared with the API and pipeline tests: a real API server on SQLite and on
PostgreSQL, and the pipeline's stages on a migrated database of each kind."""

from tests.api.conftest import api  # noqa: F401
from tests.pipeline.conftest import (  # noqa: F401
    http_targets,
    make_monitoring_stage,
    stage_backend,
    stage_db,
    stage_metrics,
    stage_postgres_url,
    stage_prefix,
    stage_registry,
)
