-- lead_shown(leads), called once per row, re-planned its subqueries for every lead (about
-- 1,300 leads/s in a backfill). What a batch of leads shows is now computed for the whole batch
-- in one statement (service/store.py, _REFRESH), so the per-row function goes.
DROP FUNCTION lead_shown(leads);
