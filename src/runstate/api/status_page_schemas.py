"""Bodies of the status page routes: pages (`StatusPageCreate`, `StatusPageUpdate`,
`StatusPagePublic`), incidents and their updates.

The rules a slug, a title or an incident's status must follow live in
`runstate.storage.status_pages` (the dashboard's forms apply the same ones); these bodies
only fix the shapes and the bounds that keep a request small.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runstate.api.schemas import NEXT_CURSOR, RequestBody
from runstate.storage.status_pages import (
    BODY_MAX,
    DESCRIPTION_MAX,
    GROUP_NAME_MAX,
    MAX_GROUPS,
    MAX_MONITORS_PER_PAGE,
    SLUG_MAX,
    TITLE_MAX,
)

# JSON carries ids as strings: accepted here although request bodies are otherwise strict.
WebsiteId = Annotated[uuid.UUID, Field(strict=False)]
WebsiteIds = Annotated[list[WebsiteId], Field(max_length=MAX_MONITORS_PER_PAGE)]
Impact = Literal["none", "minor", "major", "critical"]
IncidentStatus = Literal["investigating", "identified", "monitoring", "resolved"]


class StatusPageGroup(RequestBody):
    name: Annotated[str, Field(max_length=GROUP_NAME_MAX)] = ""
    website_ids: WebsiteIds


class _PageFields(RequestBody):
    slug: Annotated[str, Field(min_length=1, max_length=SLUG_MAX)] | None = None
    title: Annotated[str, Field(max_length=TITLE_MAX)] | None = None
    description: Annotated[str, Field(max_length=DESCRIPTION_MAX)] | None = None
    website_ids: WebsiteIds | None = Field(
        default=None, description="The monitors, in order, outside any group."
    )
    groups: Annotated[list[StatusPageGroup], Field(max_length=MAX_GROUPS)] | None = Field(
        default=None, description="The monitors in named groups, in order (instead of website_ids)."
    )
    public: bool | None = None

    @model_validator(mode="after")
    def _monitors_given_one_way(self) -> _PageFields:
        if self.website_ids is not None and self.groups is not None:
            raise ValueError("give website_ids or groups, not both")
        return self

    def monitor_groups(self) -> list[tuple[str, list[uuid.UUID]]] | None:
        """The monitors as the service's groups; None when neither field was given."""
        if self.groups is not None:
            return [(group.name, list(group.website_ids)) for group in self.groups]
        if self.website_ids is not None:
            return [("", list(self.website_ids))]
        return None


class StatusPageCreate(_PageFields):
    slug: Annotated[str, Field(min_length=1, max_length=SLUG_MAX)]
    title: Annotated[str, Field(max_length=TITLE_MAX)]
    public: bool = True


class StatusPageUpdate(_PageFields):
    """Only the fields given change; `groups` or `website_ids` replaces all the monitors."""


class StatusPageGroupPublic(BaseModel):
    name: str
    website_ids: list[uuid.UUID]


class StatusPagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    slug: str
    title: str
    description: str | None
    public: bool = Field(validation_alias="is_public")
    groups: list[StatusPageGroupPublic] = Field(default_factory=list)
    version: int = Field(description="Moves whenever what the public page shows may change.")
    version_changed_at: datetime
    created_at: datetime
    updated_at: datetime


class StatusPagesPublic(BaseModel):
    status_pages: list[StatusPagePublic]
    next_cursor: str | None = NEXT_CURSOR


class IncidentCreate(RequestBody):
    title: Annotated[str, Field(max_length=TITLE_MAX)]
    impact: Impact = "minor"
    status: IncidentStatus = "investigating"
    body: Annotated[str, Field(max_length=BODY_MAX)]


class IncidentUpdateCreate(RequestBody):
    status: IncidentStatus
    body: Annotated[str, Field(max_length=BODY_MAX)]


class IncidentUpdatePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    incident_id: uuid.UUID
    status: str
    body: str
    created_at: datetime


class PageIncidentPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    status_page_id: uuid.UUID
    title: str
    impact: str
    status: str
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    updates: list[IncidentUpdatePublic] = Field(
        default_factory=list, description="The incident's timeline, oldest first."
    )


class PageIncidentsPublic(BaseModel):
    incidents: list[PageIncidentPublic]
    next_cursor: str | None = NEXT_CURSOR
