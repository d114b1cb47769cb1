"""What hangs off an entity, replaced exactly whenever it is written: tags, links, phones.

Each set is replaced to what Kommo sent, including to empty (an empty tag list is a real
state). A link Kommo lists only on request (``Link.needs_with``) is kept as it is when the
fetch did not ask for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from service.kinds import EntityKind
from service.phones import normalize_phone
from service.records import Record, TagRef
from service.store import Conn


async def upsert_tags(
    conn: Conn, account_id: int, kind: EntityKind, tags: Iterable[TagRef]
) -> list[int]:
    """Upsert tag dictionary entries by (account, entity type, id); renames apply in place.

    Returns the ids of tags that changed (the leads showing them must be re-shown).
    """
    unique = {t.id: t for t in tags}
    if not unique:
        return []
    ids = list(unique)
    rows = await conn.fetch(
        """INSERT INTO tags AS t (account_id, entity_type, id, name, color)
           SELECT $1, $2, u.id, u.name, u.color
           FROM unnest($3::bigint[], $4::text[], $5::text[]) AS u(id, name, color)
           ON CONFLICT (account_id, entity_type, id) DO UPDATE
               SET name = EXCLUDED.name, color = COALESCE(EXCLUDED.color, t.color),
                   synced_at = now()
           WHERE t.name IS DISTINCT FROM EXCLUDED.name
              OR (EXCLUDED.color IS NOT NULL AND t.color IS DISTINCT FROM EXCLUDED.color)
           RETURNING t.id""",
        account_id,
        kind.name,
        ids,
        [unique[i].name for i in ids],
        [unique[i].color for i in ids],
    )
    return [r["id"] for r in rows]


async def replace_all(
    conn: Conn, account_id: int, kind: EntityKind, written: Sequence[Record], region: str
) -> list[int]:
    """Replace every side table of the written records; return the tags renamed on the way."""
    if not written:
        return []
    renamed: list[int] = []
    if kind.tag_table:
        renamed = await upsert_tags(conn, account_id, kind, (t for r in written for t in r.tags))
        await _replace_tags(conn, account_id, kind, written)
    for index in range(len(kind.links)):
        await _replace_links(conn, account_id, kind, index, written)
    if kind.phones_table:
        await _replace_phones(conn, account_id, kind, written, region)
    return renamed


async def _replace_tags(
    conn: Conn, account_id: int, kind: EntityKind, written: Sequence[Record]
) -> None:
    table, owner = kind.tag_table, kind.owner
    pairs = [(r.id, t.id) for r in written for t in r.tags]
    await conn.execute(
        f"DELETE FROM {table} WHERE account_id = $1 AND {owner} = ANY($2::bigint[])",
        account_id,
        [r.id for r in written],
    )
    if pairs:
        await conn.execute(
            f"""INSERT INTO {table} (account_id, {owner}, tag_id)
                SELECT $1, u.o, u.t FROM unnest($2::bigint[], $3::bigint[]) AS u(o, t)
                ON CONFLICT DO NOTHING""",
            account_id,
            [p[0] for p in pairs],
            [p[1] for p in pairs],
        )


async def _replace_links(
    conn: Conn, account_id: int, kind: EntityKind, index: int, written: Sequence[Record]
) -> None:
    link = kind.links[index]
    known = [r for r in written if link.embedded in r.links]
    if not known:
        return  # fetched without the with= that lists them: unknown, keep them
    pairs = {(r.id, target): flag for r in known for target, flag in r.links[link.embedded]}
    await conn.execute(
        f"DELETE FROM {link.table} WHERE account_id = $1 AND {kind.owner} = ANY($2::bigint[])",
        account_id,
        [r.id for r in known],
    )
    if not pairs:
        return
    owners, targets = [k[0] for k in pairs], [k[1] for k in pairs]
    if link.flag is None:
        await conn.execute(
            f"""INSERT INTO {link.table} (account_id, {kind.owner}, {link.target})
                SELECT $1, u.o, u.t FROM unnest($2::bigint[], $3::bigint[]) AS u(o, t)""",
            account_id,
            owners,
            targets,
        )
    else:
        await conn.execute(
            f"""INSERT INTO {link.table} (account_id, {kind.owner}, {link.target}, {link.flag})
                SELECT $1, u.o, u.t, u.f
                FROM unnest($2::bigint[], $3::bigint[], $4::bool[]) AS u(o, t, f)""",
            account_id,
            owners,
            targets,
            list(pairs.values()),
        )


async def _replace_phones(
    conn: Conn, account_id: int, kind: EntityKind, written: Sequence[Record], region: str
) -> None:
    table, owner = kind.phones_table, kind.owner
    ids, positions, raws, normalized, codes = [], [], [], [], []
    for r in written:
        for pos, (raw, code) in enumerate(r.phones):
            ids.append(r.id)
            positions.append(pos)
            raws.append(raw)
            normalized.append(normalize_phone(raw, region))
            codes.append(code)
    await conn.execute(
        f"DELETE FROM {table} WHERE account_id = $1 AND {owner} = ANY($2::bigint[])",
        account_id,
        [r.id for r in written],
    )
    if ids:
        await conn.execute(
            f"""INSERT INTO {table} (account_id, {owner}, position, raw, normalized, enum_code)
                SELECT $1, u.c, u.p, u.r, u.n, u.e
                FROM unnest($2::bigint[], $3::int[], $4::text[], $5::text[], $6::text[])
                    AS u(c, p, r, n, e)""",
            account_id,
            ids,
            positions,
            raws,
            normalized,
            codes,
        )
