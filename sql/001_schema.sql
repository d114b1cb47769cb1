-- The mirror's data model. Kommo ids are the keys, always with account_id.
-- Kommo's own timestamps are kept as timestamptz; the raw API object as jsonb.
-- Deleted entities are tombstoned (is_deleted, deleted_at), never removed.

-- Bumped on every real change of what a lead shows (its row, tags, contacts, their phones).
CREATE SEQUENCE lead_version_seq AS bigint;

CREATE TABLE pipelines (
    account_id      bigint      NOT NULL,
    id              bigint      NOT NULL,
    name            text        NOT NULL,
    sort            integer     NOT NULL DEFAULT 0,
    is_main         boolean     NOT NULL DEFAULT false,
    is_archive      boolean     NOT NULL DEFAULT false,
    is_deleted      boolean     NOT NULL DEFAULT false,
    deleted_at      timestamptz,
    raw             jsonb       NOT NULL,
    synced_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, id)
);

-- 142 (won) and 143 (lost) repeat in every pipeline: the key includes the pipeline.
CREATE TABLE statuses (
    account_id      bigint      NOT NULL,
    pipeline_id     bigint      NOT NULL,
    id              bigint      NOT NULL,
    name            text        NOT NULL,
    sort            integer     NOT NULL DEFAULT 0,
    color           text,
    type            integer     NOT NULL DEFAULT 0,
    is_editable     boolean     NOT NULL DEFAULT true,
    is_deleted      boolean     NOT NULL DEFAULT false,
    deleted_at      timestamptz,
    raw             jsonb       NOT NULL,
    synced_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, pipeline_id, id)
);

CREATE TABLE users (
    account_id      bigint      NOT NULL,
    id              bigint      NOT NULL,
    name            text        NOT NULL,
    email           text,
    is_active       boolean     NOT NULL DEFAULT true,
    is_deleted      boolean     NOT NULL DEFAULT false,
    deleted_at      timestamptz,
    raw             jsonb       NOT NULL,
    synced_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, id)
);

CREATE TABLE leads (
    account_id          bigint      NOT NULL,
    id                  bigint      NOT NULL,
    name                text        NOT NULL DEFAULT '',
    price               bigint,
    responsible_user_id bigint,
    group_id            bigint,
    status_id           bigint,
    pipeline_id         bigint,
    loss_reason_id      bigint,
    created_by          bigint,
    updated_by          bigint,
    created_at          timestamptz,
    updated_at          timestamptz NOT NULL,
    closed_at           timestamptz,
    closest_task_at     timestamptz,
    score               integer,
    custom_fields       jsonb       NOT NULL DEFAULT '[]',
    raw                 jsonb       NOT NULL,
    is_deleted          boolean     NOT NULL DEFAULT false,
    deleted_at          timestamptz,
    -- What consumers were last shown (the `lead` object of lead_update), and its version.
    shown               jsonb,
    version             bigint,
    last_action         text CHECK (last_action IN ('created', 'updated', 'deleted', 'restored')),
    last_source         text CHECK (last_source IN ('webhook', 'reconcile', 'backfill')),
    synced_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, id)
);
CREATE INDEX leads_updated_at_idx ON leads (account_id, updated_at);
CREATE UNIQUE INDEX leads_version_idx ON leads (version);
CREATE INDEX leads_pipeline_status_idx ON leads (account_id, pipeline_id, status_id);

CREATE TABLE contacts (
    account_id          bigint      NOT NULL,
    id                  bigint      NOT NULL,
    name                text        NOT NULL DEFAULT '',
    first_name          text        NOT NULL DEFAULT '',
    last_name           text        NOT NULL DEFAULT '',
    responsible_user_id bigint,
    group_id            bigint,
    created_by          bigint,
    updated_by          bigint,
    created_at          timestamptz,
    updated_at          timestamptz NOT NULL,
    closest_task_at     timestamptz,
    is_unsorted         boolean     NOT NULL DEFAULT false,
    custom_fields       jsonb       NOT NULL DEFAULT '[]',
    raw                 jsonb       NOT NULL,
    is_deleted          boolean     NOT NULL DEFAULT false,
    deleted_at          timestamptz,
    synced_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, id)
);
CREATE INDEX contacts_updated_at_idx ON contacts (account_id, updated_at);

-- Kommo's tag dictionaries are per entity type: the same name has different ids.
CREATE TABLE tags (
    account_id      bigint      NOT NULL,
    entity_type     text        NOT NULL CHECK (entity_type IN ('leads', 'contacts')),
    id              bigint      NOT NULL,
    name            text        NOT NULL,
    color           text,
    synced_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, entity_type, id)
);

CREATE TABLE lead_tags (
    account_id      bigint      NOT NULL,
    lead_id         bigint      NOT NULL,
    tag_id          bigint      NOT NULL,
    PRIMARY KEY (account_id, lead_id, tag_id)
);
CREATE INDEX lead_tags_tag_idx ON lead_tags (account_id, tag_id);

CREATE TABLE contact_tags (
    account_id      bigint      NOT NULL,
    contact_id      bigint      NOT NULL,
    tag_id          bigint      NOT NULL,
    PRIMARY KEY (account_id, contact_id, tag_id)
);
CREATE INDEX contact_tags_tag_idx ON contact_tags (account_id, tag_id);

-- Every contact linked to a lead, not only the main one.
CREATE TABLE lead_contacts (
    account_id      bigint      NOT NULL,
    lead_id         bigint      NOT NULL,
    contact_id      bigint      NOT NULL,
    is_main         boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (account_id, lead_id, contact_id)
);
CREATE INDEX lead_contacts_contact_idx ON lead_contacts (account_id, contact_id);

-- One row per phone value of a contact, raw and normalised (service.phones.normalize_phone).
CREATE TABLE contact_phones (
    account_id      bigint      NOT NULL,
    contact_id      bigint      NOT NULL,
    position        integer     NOT NULL,
    raw             text        NOT NULL,
    normalized      text,
    enum_code       text,
    PRIMARY KEY (account_id, contact_id, position)
);
CREATE INDEX contact_phones_normalized_idx ON contact_phones (normalized);

-- Durable sync cursors (reconcile streams, events window, backfill progress).
CREATE TABLE sync_cursors (
    account_id      bigint      NOT NULL,
    name            text        NOT NULL,
    value           bigint      NOT NULL,
    state           jsonb       NOT NULL DEFAULT '{}',
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, name)
);

-- The OAuth token pair, refreshed under a lock and persisted before use.
CREATE TABLE oauth_tokens (
    base_url        text        PRIMARY KEY,
    access_token    text        NOT NULL,
    refresh_token   text        NOT NULL,
    expires_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Time as consumers see it: ISO 8601 in UTC with a Z.
CREATE FUNCTION kommo_iso(ts timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;

-- The `lead` object of a lead_update message, built from the mirror's tables.
CREATE FUNCTION lead_shown(l leads) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'id', l.id,
        'name', l.name,
        'price', l.price,
        'pipeline_id', l.pipeline_id,
        'status_id', l.status_id,
        'responsible_user_id', l.responsible_user_id,
        'created_at', kommo_iso(l.created_at),
        'updated_at', kommo_iso(l.updated_at),
        'closed_at', kommo_iso(l.closed_at),
        'is_deleted', l.is_deleted,
        'tags', COALESCE((
            SELECT jsonb_agg(jsonb_build_object('id', t.id, 'name', t.name) ORDER BY t.id)
            FROM lead_tags lt
            JOIN tags t ON t.account_id = lt.account_id AND t.entity_type = 'leads' AND t.id = lt.tag_id
            WHERE lt.account_id = l.account_id AND lt.lead_id = l.id), '[]'::jsonb),
        'contacts', COALESCE((
            SELECT jsonb_agg(jsonb_build_object(
                       'id', c.id, 'is_main', lc.is_main, 'name', c.name,
                       'phones', COALESCE((
                           SELECT jsonb_agg(p.normalized ORDER BY p.position)
                           FROM contact_phones p
                           WHERE p.account_id = c.account_id AND p.contact_id = c.id
                             AND p.normalized IS NOT NULL), '[]'::jsonb))
                   ORDER BY lc.is_main DESC, c.id)
            FROM lead_contacts lc
            JOIN contacts c ON c.account_id = lc.account_id AND c.id = lc.contact_id
            WHERE lc.account_id = l.account_id AND lc.lead_id = l.id AND NOT c.is_deleted),
            '[]'::jsonb),
        'custom_fields', l.custom_fields)
$$;
