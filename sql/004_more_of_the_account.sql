-- More of the account: companies, custom fields as typed data, e-mails, loss reasons and the
-- stage history; and a COMMENT on every table, view and column, so that \d+ documents them.
-- See docs/schema.md for the questions these tables answer.

ALTER TABLE tags DROP CONSTRAINT tags_entity_type_check;
ALTER TABLE tags ADD CONSTRAINT tags_entity_type_check
    CHECK (entity_type IN ('leads', 'contacts', 'companies'));

CREATE TABLE companies (
    account_id          bigint      NOT NULL,
    id                  bigint      NOT NULL,
    name                text        NOT NULL DEFAULT '',
    responsible_user_id bigint,
    group_id            bigint,
    created_by          bigint,
    updated_by          bigint,
    created_at          timestamptz,
    updated_at          timestamptz NOT NULL,
    closest_task_at     timestamptz,
    custom_fields       jsonb       NOT NULL DEFAULT '[]',
    raw                 jsonb       NOT NULL,
    is_deleted          boolean     NOT NULL DEFAULT false,
    deleted_at          timestamptz,
    synced_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, id)
);
CREATE INDEX companies_updated_at_idx ON companies (account_id, updated_at);

CREATE TABLE company_tags (
    account_id      bigint      NOT NULL,
    company_id      bigint      NOT NULL,
    tag_id          bigint      NOT NULL,
    PRIMARY KEY (account_id, company_id, tag_id)
);
CREATE INDEX company_tags_tag_idx ON company_tags (account_id, tag_id);

CREATE TABLE company_phones (
    account_id      bigint      NOT NULL,
    company_id      bigint      NOT NULL,
    position        integer     NOT NULL,
    raw             text        NOT NULL,
    normalized      text,
    enum_code       text,
    PRIMARY KEY (account_id, company_id, position)
);
CREATE INDEX company_phones_normalized_idx ON company_phones (normalized);

CREATE TABLE lead_companies (
    account_id      bigint      NOT NULL,
    lead_id         bigint      NOT NULL,
    company_id      bigint      NOT NULL,
    PRIMARY KEY (account_id, lead_id, company_id)
);
CREATE INDEX lead_companies_company_idx ON lead_companies (account_id, company_id);

CREATE TABLE contact_companies (
    account_id      bigint      NOT NULL,
    contact_id      bigint      NOT NULL,
    company_id      bigint      NOT NULL,
    PRIMARY KEY (account_id, contact_id, company_id)
);
CREATE INDEX contact_companies_company_idx ON contact_companies (account_id, company_id);

CREATE TABLE contact_emails (
    account_id      bigint      NOT NULL,
    contact_id      bigint      NOT NULL,
    position        integer     NOT NULL,
    raw             text        NOT NULL,
    normalized      text,
    enum_code       text,
    PRIMARY KEY (account_id, contact_id, position)
);
CREATE INDEX contact_emails_normalized_idx ON contact_emails (normalized);

CREATE TABLE custom_fields (
    account_id      bigint      NOT NULL,
    entity_type     text        NOT NULL CHECK (entity_type IN ('leads', 'contacts', 'companies')),
    id              bigint      NOT NULL,
    name            text        NOT NULL,
    type            text        NOT NULL,
    code            text,
    sort            integer     NOT NULL DEFAULT 0,
    is_deleted      boolean     NOT NULL DEFAULT false,
    deleted_at      timestamptz,
    raw             jsonb       NOT NULL,
    synced_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, entity_type, id)
);

CREATE TABLE custom_field_enums (
    account_id      bigint      NOT NULL,
    field_id        bigint      NOT NULL,
    id              bigint      NOT NULL,
    value           text        NOT NULL,
    sort            integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, field_id, id)
);

CREATE TABLE custom_field_values (
    account_id      bigint      NOT NULL,
    entity_type     text        NOT NULL CHECK (entity_type IN ('leads', 'contacts', 'companies')),
    entity_id       bigint      NOT NULL,
    field_id        bigint      NOT NULL,
    position        integer     NOT NULL,
    value_text      text,
    value_number    numeric,
    value_bool      boolean,
    value_at        timestamptz,
    enum_id         bigint,
    enum_code       text,
    PRIMARY KEY (account_id, entity_type, entity_id, field_id, position)
);
CREATE INDEX custom_field_values_field_idx
    ON custom_field_values (account_id, field_id, enum_id);

CREATE TABLE loss_reasons (
    account_id      bigint      NOT NULL,
    id              bigint      NOT NULL,
    name            text        NOT NULL,
    sort            integer     NOT NULL DEFAULT 0,
    is_deleted      boolean     NOT NULL DEFAULT false,
    deleted_at      timestamptz,
    raw             jsonb       NOT NULL,
    synced_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, id)
);

CREATE TABLE lead_status_changes (
    account_id          bigint      NOT NULL,
    event_id            text        NOT NULL,
    lead_id             bigint      NOT NULL,
    changed_at          timestamptz NOT NULL,
    changed_by          bigint,
    pipeline_id_before  bigint,
    status_id_before    bigint,
    pipeline_id         bigint      NOT NULL,
    status_id           bigint      NOT NULL,
    PRIMARY KEY (account_id, event_id)
);
CREATE INDEX lead_status_changes_lead_idx
    ON lead_status_changes (account_id, lead_id, changed_at);

CREATE INDEX leads_responsible_idx ON leads (account_id, responsible_user_id);
CREATE INDEX leads_loss_reason_idx ON leads (account_id, loss_reason_id)
    WHERE loss_reason_id IS NOT NULL;

-- What a lead showed before this release (sql/003): the quiet upgrade stores the new fields
-- without a message only where this part is unchanged; a real change is published as ever.
CREATE FUNCTION lead_shown_before_004(shown jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (shown - ARRAY['pipeline_name', 'status_name', 'responsible_user_name', 'companies',
                          'loss_reason'])
           || jsonb_build_object('contacts', COALESCE(
                  (SELECT jsonb_agg(c - ARRAY['emails', 'unparsed_phones'] ORDER BY n)
                   FROM jsonb_array_elements(shown->'contacts') WITH ORDINALITY AS x(c, n)),
                  '[]'::jsonb))
$$;

-- How long each lead stayed in each stage it entered through a recorded change. The stage a lead
-- was in before its first recorded change has no row (when it entered is unknown).
CREATE VIEW lead_stage_durations AS
SELECT c.account_id, c.lead_id, c.pipeline_id, c.status_id,
       c.changed_at AS entered_at,
       lead(c.changed_at) OVER w AS left_at,
       extract(epoch FROM lead(c.changed_at) OVER w - c.changed_at)::bigint AS seconds
FROM lead_status_changes c
WINDOW w AS (PARTITION BY c.account_id, c.lead_id ORDER BY c.changed_at, c.event_id);

-- ---------------------------------------------------------------------------------- comments
COMMENT ON TABLE pipelines IS 'Kommo pipelines (GET /api/v4/leads/pipelines)';
COMMENT ON TABLE statuses IS 'Stages of each pipeline; 142 (won) and 143 (lost) repeat in every pipeline';
COMMENT ON TABLE users IS 'Kommo users (GET /api/v4/users; needs an admin token)';
COMMENT ON TABLE leads IS 'Leads (deals), one row per Kommo lead, tombstoned when deleted';
COMMENT ON TABLE contacts IS 'Contacts, one row per Kommo contact, tombstoned when deleted';
COMMENT ON TABLE companies IS 'Companies, one row per Kommo company, tombstoned when deleted';
COMMENT ON TABLE tags IS 'Tag dictionaries; separate per entity type (the same name has different ids)';
COMMENT ON TABLE lead_tags IS 'The tags of each lead (an exact set)';
COMMENT ON TABLE contact_tags IS 'The tags of each contact (an exact set)';
COMMENT ON TABLE company_tags IS 'The tags of each company (an exact set)';
COMMENT ON TABLE lead_contacts IS 'Every contact linked to a lead, the main one flagged';
COMMENT ON TABLE lead_companies IS 'The company linked to a lead (Kommo allows one)';
COMMENT ON TABLE contact_companies IS 'The company linked to a contact (Kommo allows one)';
COMMENT ON TABLE contact_phones IS 'One row per phone value of a contact, raw and normalised';
COMMENT ON TABLE company_phones IS 'One row per phone value of a company, raw and normalised';
COMMENT ON TABLE contact_emails IS 'One row per e-mail value of a contact, raw and normalised';
COMMENT ON TABLE custom_fields IS 'Custom field definitions of leads, contacts and companies';
COMMENT ON TABLE custom_field_enums IS 'The options of select, multiselect, radiobutton and category fields';
COMMENT ON TABLE custom_field_values IS 'One typed row per custom field value of a lead, contact or company; replaced whenever the entity is written';
COMMENT ON FUNCTION lead_shown_before_004(jsonb) IS
    'A lead''s shown object without the fields this release added (the quiet upgrade)';
COMMENT ON TABLE loss_reasons IS 'Why leads were lost (GET /api/v4/leads/loss_reasons)';
COMMENT ON TABLE lead_status_changes IS 'Stage history: one row per Kommo lead_status_changed event';
COMMENT ON VIEW lead_stage_durations IS 'How long each lead stayed in each stage, from lead_status_changes';
COMMENT ON TABLE sync_cursors IS 'Durable sync cursors: reconcile streams, events window, backfill and import progress';
COMMENT ON TABLE oauth_tokens IS 'The OAuth token pair, refreshed under a lock and persisted before use';
COMMENT ON TABLE schema_migrations IS 'Migrations applied (sql/NNN_name.sql)';
COMMENT ON COLUMN lead_outbox.version IS 'The version of the lead_update message';
COMMENT ON COLUMN lead_outbox.account_id IS 'Kommo account id';
COMMENT ON COLUMN lead_outbox.payload IS 'The whole lead_update envelope, JSON text';
COMMENT ON COLUMN lead_outbox.created_at IS 'When it was queued (the sweep publishes what waited too long)';
COMMENT ON COLUMN schema_migrations.version IS 'The migration number (NNN)';
COMMENT ON COLUMN schema_migrations.name IS 'The migration file name';
COMMENT ON COLUMN schema_migrations.applied_at IS 'When it was applied';
COMMENT ON SEQUENCE lead_version_seq IS 'lead_update versions: bumped on every real change of what a lead shows';

-- Columns that repeat with one meaning.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['pipelines', 'statuses', 'users', 'leads', 'contacts', 'companies',
                             'tags', 'lead_tags', 'contact_tags', 'company_tags', 'lead_contacts',
                             'lead_companies', 'contact_companies', 'contact_phones',
                             'company_phones', 'contact_emails', 'custom_fields',
                             'custom_field_enums', 'custom_field_values', 'loss_reasons',
                             'lead_status_changes', 'sync_cursors'] LOOP
        EXECUTE format('COMMENT ON COLUMN %I.account_id IS %L', t, 'Kommo account id');
    END LOOP;
    FOREACH t IN ARRAY ARRAY['pipelines', 'statuses', 'users', 'leads', 'contacts', 'companies',
                             'custom_fields', 'loss_reasons'] LOOP
        EXECUTE format('COMMENT ON COLUMN %I.is_deleted IS %L', t,
                       'Deleted in Kommo (tombstone); the row stays');
        EXECUTE format('COMMENT ON COLUMN %I.deleted_at IS %L', t,
                       'When Kommo deleted it (or the mirror noticed)');
        EXECUTE format('COMMENT ON COLUMN %I.raw IS %L', t,
                       'The object as the Kommo API returned it, without _links');
        EXECUTE format('COMMENT ON COLUMN %I.synced_at IS %L', t, 'When the mirror last wrote it');
    END LOOP;
    FOREACH t IN ARRAY ARRAY['tags', 'statuses'] LOOP
        EXECUTE format('COMMENT ON COLUMN %I.synced_at IS %L', t, 'When the mirror last wrote it');
    END LOOP;
    FOREACH t IN ARRAY ARRAY['leads', 'contacts', 'companies'] LOOP
        EXECUTE format('COMMENT ON COLUMN %I.id IS %L', t, 'Kommo id');
        EXECUTE format('COMMENT ON COLUMN %I.name IS %L', t, 'Name');
        EXECUTE format('COMMENT ON COLUMN %I.responsible_user_id IS %L', t,
                       'The responsible user (users.id)');
        EXECUTE format('COMMENT ON COLUMN %I.group_id IS %L', t, 'The user group (0: none)');
        EXECUTE format('COMMENT ON COLUMN %I.created_by IS %L', t, 'Who created it (0: a robot)');
        EXECUTE format('COMMENT ON COLUMN %I.updated_by IS %L', t,
                       'Who changed it last (0: a robot)');
        EXECUTE format('COMMENT ON COLUMN %I.created_at IS %L', t, 'Kommo created_at');
        EXECUTE format('COMMENT ON COLUMN %I.updated_at IS %L', t,
                       'Kommo updated_at (whole seconds); a row never goes back to an older one');
        EXECUTE format('COMMENT ON COLUMN %I.closest_task_at IS %L', t,
                       'When its nearest open task is due');
        EXECUTE format('COMMENT ON COLUMN %I.custom_fields IS %L', t,
                       'custom_fields_values as Kommo sent them ([] for none); typed in custom_field_values');
    END LOOP;
    FOREACH t IN ARRAY ARRAY['lead_tags', 'contact_tags', 'company_tags'] LOOP
        EXECUTE format('COMMENT ON COLUMN %I.tag_id IS %L', t,
                       'tags.id (of the same entity type)');
    END LOOP;
    FOREACH t IN ARRAY ARRAY['contact_phones', 'company_phones', 'contact_emails'] LOOP
        EXECUTE format('COMMENT ON COLUMN %I.position IS %L', t, 'Order among the values (from 0)');
        EXECUTE format('COMMENT ON COLUMN %I.raw IS %L', t, 'The value as typed in Kommo');
        EXECUTE format('COMMENT ON COLUMN %I.enum_code IS %L', t, 'Its kind: WORK, MOB, PRIV, ...');
    END LOOP;
END
$$;

COMMENT ON COLUMN pipelines.id IS 'Kommo pipeline id';
COMMENT ON COLUMN pipelines.name IS 'Pipeline name';
COMMENT ON COLUMN pipelines.sort IS 'Display order';
COMMENT ON COLUMN pipelines.is_main IS 'The main pipeline';
COMMENT ON COLUMN pipelines.is_archive IS 'Archived';
COMMENT ON COLUMN statuses.pipeline_id IS 'pipelines.id';
COMMENT ON COLUMN statuses.id IS 'Kommo status id (142 won, 143 lost, in every pipeline)';
COMMENT ON COLUMN statuses.name IS 'Stage name';
COMMENT ON COLUMN statuses.sort IS 'Display order';
COMMENT ON COLUMN statuses.color IS 'Colour (#rrggbb)';
COMMENT ON COLUMN statuses.type IS '1: incoming leads (unsorted), 0: a normal stage';
COMMENT ON COLUMN statuses.is_editable IS 'Can be renamed in Kommo';
COMMENT ON COLUMN users.id IS 'Kommo user id';
COMMENT ON COLUMN users.name IS 'User name';
COMMENT ON COLUMN users.email IS 'Login e-mail';
COMMENT ON COLUMN users.is_active IS 'Active (may log in)';
COMMENT ON COLUMN leads.price IS 'Sale value (whole currency units)';
COMMENT ON COLUMN leads.status_id IS 'Current stage (statuses.id, with pipeline_id)';
COMMENT ON COLUMN leads.pipeline_id IS 'Current pipeline (pipelines.id)';
COMMENT ON COLUMN leads.loss_reason_id IS 'Why it was lost (loss_reasons.id), when lost';
COMMENT ON COLUMN leads.closed_at IS 'When it was won or lost (null while open)';
COMMENT ON COLUMN leads.score IS 'Kommo score';
COMMENT ON COLUMN leads.shown IS 'The lead object of its latest lead_update message';
COMMENT ON COLUMN leads.version IS 'The version of its latest lead_update (lead_version_seq)';
COMMENT ON COLUMN leads.last_action IS 'The action of its latest lead_update';
COMMENT ON COLUMN leads.last_source IS 'What wrote its latest lead_update: webhook, reconcile or backfill';
COMMENT ON COLUMN contacts.first_name IS 'First name (often empty)';
COMMENT ON COLUMN contacts.last_name IS 'Last name (often empty)';
COMMENT ON COLUMN contacts.is_unsorted IS 'Created from an incoming (unsorted) lead not yet accepted';
COMMENT ON COLUMN tags.entity_type IS 'leads, contacts or companies';
COMMENT ON COLUMN tags.id IS 'Kommo tag id';
COMMENT ON COLUMN tags.name IS 'Tag name';
COMMENT ON COLUMN tags.color IS 'Colour (hex without #; lead tags only)';
COMMENT ON COLUMN lead_tags.lead_id IS 'leads.id';
COMMENT ON COLUMN contact_tags.contact_id IS 'contacts.id';
COMMENT ON COLUMN company_tags.company_id IS 'companies.id';
COMMENT ON COLUMN lead_contacts.lead_id IS 'leads.id';
COMMENT ON COLUMN lead_contacts.contact_id IS 'contacts.id';
COMMENT ON COLUMN lead_contacts.is_main IS 'The lead''s main contact';
COMMENT ON COLUMN lead_companies.lead_id IS 'leads.id';
COMMENT ON COLUMN lead_companies.company_id IS 'companies.id';
COMMENT ON COLUMN contact_companies.contact_id IS 'contacts.id';
COMMENT ON COLUMN contact_companies.company_id IS 'companies.id';
COMMENT ON COLUMN contact_phones.contact_id IS 'contacts.id';
COMMENT ON COLUMN contact_phones.normalized IS 'E.164 digits without + (service.phones.normalize_phone); null when not a phone number';
COMMENT ON COLUMN company_phones.company_id IS 'companies.id';
COMMENT ON COLUMN company_phones.normalized IS 'E.164 digits without + (service.phones.normalize_phone); null when not a phone number';
COMMENT ON COLUMN contact_emails.contact_id IS 'contacts.id';
COMMENT ON COLUMN contact_emails.normalized IS 'The trimmed, lower-cased address; null when it is not an address';
COMMENT ON COLUMN custom_fields.entity_type IS 'leads, contacts or companies';
COMMENT ON COLUMN custom_fields.id IS 'Kommo field id';
COMMENT ON COLUMN custom_fields.name IS 'Field name';
COMMENT ON COLUMN custom_fields.type IS 'Kommo field type: text, numeric, select, date, multitext, ...';
COMMENT ON COLUMN custom_fields.code IS 'Field code (PHONE, EMAIL, POSITION, ...), when it has one';
COMMENT ON COLUMN custom_fields.sort IS 'Display order';
COMMENT ON COLUMN custom_field_enums.field_id IS 'custom_fields.id';
COMMENT ON COLUMN custom_field_enums.id IS 'Kommo option id (custom_field_values.enum_id)';
COMMENT ON COLUMN custom_field_enums.value IS 'Option text';
COMMENT ON COLUMN custom_field_enums.sort IS 'Display order';
COMMENT ON COLUMN custom_field_values.entity_type IS 'leads, contacts or companies';
COMMENT ON COLUMN custom_field_values.entity_id IS 'leads.id, contacts.id or companies.id';
COMMENT ON COLUMN custom_field_values.field_id IS 'custom_fields.id';
COMMENT ON COLUMN custom_field_values.position IS 'Order of the value within the field (from 0)';
COMMENT ON COLUMN custom_field_values.value_text IS 'The value as text, for every type (the option text for option fields)';
COMMENT ON COLUMN custom_field_values.value_number IS 'numeric, price and monetary fields';
COMMENT ON COLUMN custom_field_values.value_bool IS 'checkbox fields';
COMMENT ON COLUMN custom_field_values.value_at IS 'date, date_time and birthday fields';
COMMENT ON COLUMN custom_field_values.enum_id IS 'The chosen option (custom_field_enums.id) of option and multitext fields';
COMMENT ON COLUMN custom_field_values.enum_code IS 'multitext kind: WORK, MOB, PRIV, ...';
COMMENT ON COLUMN loss_reasons.id IS 'Kommo loss reason id';
COMMENT ON COLUMN loss_reasons.name IS 'Loss reason';
COMMENT ON COLUMN loss_reasons.sort IS 'Display order';
COMMENT ON COLUMN lead_status_changes.event_id IS 'Kommo event id (the lead_status_changed event)';
COMMENT ON COLUMN lead_status_changes.lead_id IS 'leads.id';
COMMENT ON COLUMN lead_status_changes.changed_at IS 'When the lead moved';
COMMENT ON COLUMN lead_status_changes.changed_by IS 'Who moved it (users.id; 0: a robot)';
COMMENT ON COLUMN lead_status_changes.pipeline_id_before IS 'Pipeline before the move';
COMMENT ON COLUMN lead_status_changes.status_id_before IS 'Stage before the move';
COMMENT ON COLUMN lead_status_changes.pipeline_id IS 'Pipeline after the move';
COMMENT ON COLUMN lead_status_changes.status_id IS 'Stage after the move';
COMMENT ON COLUMN lead_stage_durations.account_id IS 'Kommo account id';
COMMENT ON COLUMN lead_stage_durations.lead_id IS 'leads.id';
COMMENT ON COLUMN lead_stage_durations.pipeline_id IS 'Pipeline of the stage';
COMMENT ON COLUMN lead_stage_durations.status_id IS 'The stage';
COMMENT ON COLUMN lead_stage_durations.entered_at IS 'When the lead entered the stage';
COMMENT ON COLUMN lead_stage_durations.left_at IS 'When it left (null while it is still there)';
COMMENT ON COLUMN lead_stage_durations.seconds IS 'Time spent there (null while it is still there)';
COMMENT ON COLUMN sync_cursors.name IS 'Which cursor: leads, contacts, companies, events, backfill, sweep_*, ...';
COMMENT ON COLUMN sync_cursors.value IS 'The cursor (Unix s, a page number, ...)';
COMMENT ON COLUMN sync_cursors.state IS 'What else the cursor needs to resume';
COMMENT ON COLUMN sync_cursors.updated_at IS 'When it was saved';
COMMENT ON COLUMN oauth_tokens.base_url IS 'The Kommo account base URL';
COMMENT ON COLUMN oauth_tokens.access_token IS 'The current access token';
COMMENT ON COLUMN oauth_tokens.refresh_token IS 'The current (single-use) refresh token';
COMMENT ON COLUMN oauth_tokens.expires_at IS 'When the access token expires';
COMMENT ON COLUMN oauth_tokens.updated_at IS 'When the pair was saved';
