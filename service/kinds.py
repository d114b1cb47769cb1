"""The entity kinds the mirror holds, each declared once; the engine is generic over them.

A kind names its Kommo endpoint and ``with=`` values, its webhook key, its table and typed
columns, and what hangs off it (tags, links to other kinds, phones). Adding a kind is a
declaration here, a migration that creates its tables, and its tests: the client
(:mod:`service.kommo`), the webhook parser, the hint queue, the store and the sync engine
read everything else from the declaration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ColumnType = Literal["text", "bigint", "int", "bool", "ts"]
"""``ts`` columns take Kommo's Unix seconds and are stored as ``timestamptz``."""


@dataclass(frozen=True)
class Column:
    name: str  # the column and the API field of the same name
    type: ColumnType


@dataclass(frozen=True)
class Link:
    """Links to another kind, listed in ``_embedded[embedded]``, kept as an exact set in
    ``table`` (``owner`` and ``target`` id columns, optionally an ``is_main`` flag). When
    ``needs_with`` is set the API lists them only if the fetch asked for it; a fetch without it
    leaves the stored links as they are."""

    embedded: str
    table: str
    target: str
    flag: str | None = None
    needs_with: str | None = None


@dataclass(frozen=True)
class EntityKind:
    name: str  # the API path segment and _embedded key, the table, the hint queue
    singular: str  # the events API's entity_type, as in "<singular>_deleted"
    owner: str  # the owner id column of its side tables ("lead_id")
    columns: tuple[Column, ...]  # besides account_id, id, custom_fields and raw
    fetch_with: tuple[str, ...] = ()  # with= on every read of this kind
    webhook_key: str = ""  # the top-level webhook key ("leads", "contacts")
    webhook_type: str | None = None  # the [type] value that selects it under a shared key
    tag_table: str | None = None
    links: tuple[Link, ...] = ()
    phones_table: str | None = None
    emails_table: str | None = None

    @property
    def deletes_queue(self) -> str:
        """The name of its hint queue for delete webhooks."""
        return f"{self.singular}_deletes"

    def __str__(self) -> str:
        return self.name


_ACTOR = (
    Column("responsible_user_id", "bigint"),
    Column("group_id", "bigint"),
    Column("created_by", "bigint"),
    Column("updated_by", "bigint"),
)

LEADS = EntityKind(
    name="leads",
    singular="lead",
    owner="lead_id",
    columns=(
        Column("name", "text"),
        Column("price", "bigint"),
        *_ACTOR[:2],
        Column("status_id", "bigint"),
        Column("pipeline_id", "bigint"),
        Column("loss_reason_id", "bigint"),
        *_ACTOR[2:],
        Column("created_at", "ts"),
        Column("updated_at", "ts"),
        Column("closed_at", "ts"),
        Column("closest_task_at", "ts"),
        Column("score", "int"),
    ),
    fetch_with=("contacts", "loss_reason"),
    webhook_key="leads",
    tag_table="lead_tags",
    links=(
        Link("contacts", "lead_contacts", "contact_id", flag="is_main", needs_with="contacts"),
        Link("companies", "lead_companies", "company_id"),
    ),
)

CONTACTS = EntityKind(
    name="contacts",
    singular="contact",
    owner="contact_id",
    columns=(
        Column("name", "text"),
        Column("first_name", "text"),
        Column("last_name", "text"),
        *_ACTOR,
        Column("created_at", "ts"),
        Column("updated_at", "ts"),
        Column("closest_task_at", "ts"),
        Column("is_unsorted", "bool"),
    ),
    webhook_key="contacts",
    webhook_type="contact",
    tag_table="contact_tags",
    links=(Link("companies", "contact_companies", "company_id"),),
    phones_table="contact_phones",
    emails_table="contact_emails",
)

COMPANIES = EntityKind(
    name="companies",
    singular="company",
    owner="company_id",
    columns=(
        Column("name", "text"),
        *_ACTOR,
        Column("created_at", "ts"),
        Column("updated_at", "ts"),
        Column("closest_task_at", "ts"),
    ),
    webhook_key="contacts",
    webhook_type="company",
    tag_table="company_tags",
    phones_table="company_phones",
)

ENTITY_KINDS: tuple[EntityKind, ...] = (LEADS, CONTACTS, COMPANIES)


def kind_named(name: str) -> EntityKind:
    for kind in ENTITY_KINDS:
        if name in (kind.name, kind.singular):
            return kind
    raise KeyError(f"no entity kind {name!r}")
