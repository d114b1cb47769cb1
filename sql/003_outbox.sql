-- Publication follows the commit durably, and versions become visible in order.
--
-- Every lead_update a transaction produces is written to lead_outbox in that transaction; the
-- writer publishes it after the commit and deletes the row. A writer that dies in between
-- leaves the row, and the outbox sweep (service/sync/outbox.py) publishes it a few seconds
-- later. So every committed version reaches the connected clients.
--
-- Versions are assigned under one deployment-wide lock held until commit
-- (lead_assign_versions below), so a version never becomes visible before a smaller one:
-- writers of different accounts run at once, but they take their versions, and commit, one
-- after the other. GET /api/leads?changed_after=V and the outbox sweep can never skip a version
-- that commits later than a greater one.

CREATE TABLE lead_outbox (
    version     bigint      PRIMARY KEY,
    account_id  bigint      NOT NULL,
    payload     text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE lead_outbox IS
    'lead_update messages committed but not yet published (published, then deleted)';

-- Assign the next versions to leads whose shown object was just recomputed in this
-- transaction, and queue their lead_update messages; the lock is held until commit.
CREATE FUNCTION lead_assign_versions(account bigint, lead_ids bigint[])
RETURNS TABLE (lead_id bigint, version bigint, payload text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7002, 0);
    RETURN QUERY
    WITH bumped AS (
        UPDATE leads l SET version = nextval('lead_version_seq')
        FROM (SELECT unnest(lead_ids) AS id ORDER BY 1) AS u
        WHERE l.account_id = account AND l.id = u.id
        RETURNING l.id, l.version, l.account_id,
            json_build_object('event', 'lead_update', 'account_id', l.account_id,
                'data', json_build_object('action', l.last_action, 'version', l.version,
                    'source', l.last_source, 'lead', l.shown))::text AS payload
    ), queued AS (
        INSERT INTO lead_outbox (version, account_id, payload)
        SELECT b.version, b.account_id, b.payload FROM bumped b
    )
    SELECT b.id, b.version, b.payload FROM bumped b;
END
$$;
