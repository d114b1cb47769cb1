"""What hangs off an entity, replaced exactly whenever it is written: tags, links, phones,
e-mails and custom field values.

Each set is replaced to what Kommo sent, including to empty (an empty tag list is a real
state). A link Kommo lists only on request (``Link.needs_with``) is kept as it is when the
fetch did not ask for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from service.emails import normalize_email
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
        await _replace_contact_points(
            conn,
            account_id,
            kind.phones_table,
            kind,
            written,
            [r.phones for r in written],
            lambda raw: normalize_phone(raw, region),
        )
    if kind.emails_table:
        await _replace_contact_points(
            conn,
            account_id,
            kind.emails_table,
            kind,
            written,
            [r.emails for r in written],
            normalize_email,
        )
    await _replace_values(conn, account_id, kind, written)
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


async def _replace_contact_points(
    conn: Conn,
    account_id: int,
    table: str,
    kind: EntityKind,
    written: Sequence[Record],
    points: Sequence[Sequence[tuple[str, str | None]]],
    normalize: Callable[[str], str | None],
) -> None:
    """Phones or e-mails: one row per value, raw and normalised, in Kommo's order."""
    owner = kind.owner
    ids, positions, raws, normalized, codes = [], [], [], [], []
    for r, values in zip(written, points, strict=True):
        for pos, (raw, code) in enumerate(values):
            ids.append(r.id)
            positions.append(pos)
            raws.append(raw)
            normalized.append(normalize(raw))
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


async def _replace_values(
    conn: Conn, account_id: int, kind: EntityKind, written: Sequence[Record]
) -> None:
    """Custom field values: exactly what Kommo sent (none when it sent null)."""
    values = [(r.id, v) for r in written for v in r.values]
    await conn.execute(
        """DELETE FROM custom_field_values
           WHERE account_id = $1 AND entity_type = $2 AND entity_id = ANY($3::bigint[])""",
        account_id,
        kind.name,
        [r.id for r in written],
    )
    if not values:
        return
    await conn.execute(
        """INSERT INTO custom_field_values (account_id, entity_type, entity_id, field_id, position,
               value_text, value_number, value_bool, value_at, enum_id, enum_code)
           SELECT $1, $2, u.e, u.f, u.p, u.t, u.n, u.b, to_timestamp(u.a), u.i, u.c
           FROM unnest($3::bigint[], $4::bigint[], $5::int[], $6::text[], $7::numeric[],
                       $8::bool[], $9::float8[], $10::bigint[], $11::text[])
               AS u(e, f, p, t, n, b, a, i, c)
           ON CONFLICT DO NOTHING""",
        account_id,
        kind.name,
        [e for e, _ in values],
        [v.field_id for _, v in values],
        [v.position for _, v in values],
        [v.text for _, v in values],
        [v.number for _, v in values],
        [v.flag for _, v in values],
        [v.at for _, v in values],
        [v.enum_id for _, v in values],
        [v.enum_code for _, v in values],
    )
