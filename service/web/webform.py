"""Kommo's webhook body, parsed into :class:`~service.sync.hints.Hints` (ids and kinds only).

A webhook is a hint, not data: only ids, kinds and ``last_modified``/``updated_at`` are taken;
the worker fetches the records from the API. The body is PHP ``http_build_query`` output::

    account[subdomain]=…&account[id]=…&account[_links][self]=https://<sub>.kommo.com
                                                  (first, last or absent)
    leads[add|update|status|responsible|delete|restore][<i>][id|last_modified|updated_at|…]=…
    contacts[add|update|delete|restore|responsible][<i>][id|…|type]=…   type = contact|company
    <kind>[<action>][<i>][account_id]=…           (every record; the only account in old bodies)
    unsorted[add|update][<i>][data][leads][<j>][id]=…                 incoming leads
    unsorted[delete][<i>][action]=accept|decline
    unsorted[delete][<i>][accept_result|decline_result][leads][]=…    (or [<j>])

Rules of the parser (:func:`parse_webhook`):

- Indices are any decimal numbers, in any order, not necessarily contiguous; several entity
  kinds and actions may share one body.
- Each entity kind is declared in :mod:`service.kinds` with its webhook key (and, under the
  shared ``contacts`` key, its ``type``). A contact record without ``type`` is a contact; a
  ``type=company`` record is a company. A ``companies[<action>]`` key (not in Kommo's documented
  layout, but cheap to accept) is read as companies too.
- Other top-level kinds (``task``, ``talk``, ``message``, …) and other actions
  (``leads[note]``, ``contacts[note]``, …) are ignored and counted per record.
- The account: every account id the body carries is collected (``account[id]`` and each
  record's ``account_id``, of any kind) and so is the subdomain (``account[subdomain]``, and
  the host of ``account[_links][self]`` when it is a Kommo or amoCRM host), lower-cased and
  without a host suffix (:func:`subdomain_of`). A body naming two different accounts is
  invalid; whether the one it names is ours is the endpoint's decision.
- Incoming leads (``unsorted``, counted per record): the ids listed under ``data[<kind>]`` (an
  incoming lead edited) and ``accept_result[<kind>]`` (accepted: the lead changed) are change
  hints, those under ``decline_result[<kind>]`` (declined: the lead is deleted) delete hints,
  which the drain verifies by a read as for any delete. ``<kind>`` is a mirrored kind's name
  (``leads``, ``contacts``); other unsorted fields are ignored.
- A timestamp that is absent or not a plain integer counts as 0 (it only tunes the lagging-read
  check); the ids, the index, ``type`` and the account ids are validated strictly.
- Delete and change of one id in one body: the delete wins (Kommo sends one state per id, and
  an update can't follow a delete in one body, so the change came first). Delete and restore of
  one id in one body: both are kept as hints (the restore also queues a fetch); the worker's
  fetch decides.
- Invalid input raises :class:`WebhookParseError` with a one-line reason.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote_plus, urlsplit

from service.kinds import ENTITY_KINDS, EntityKind
from service.sync.hints import Hints

MAX_ID: Final = 2**53

_ACTIONS: Final = {
    "leads": frozenset({"add", "update", "status", "responsible", "delete", "restore"}),
    "contacts": frozenset({"add", "update", "delete", "restore", "responsible"}),
    "companies": frozenset({"add", "update", "delete", "restore", "responsible"}),
}
_FIELDS: Final = frozenset({"id", "last_modified", "updated_at", "type", "account_id"})
_TYPES: Final = frozenset({"contact", "company"})
_HOST_SUFFIXES: Final = (".kommo.com", ".amocrm.ru", ".amocrm.com")
_UNSORTED_LISTS: Final = frozenset({"data", "accept_result", "decline_result"})
_KINDS_BY_NAME: Final = {k.name: k for k in ENTITY_KINDS}
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HIGH_BYTES = re.compile(r"(?:%[89A-Fa-f][0-9A-Fa-f])+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class WebhookParseError(ValueError):
    """The body is not a Kommo webhook; ``str(error)`` is a one-line reason."""


def _unquote(text: str) -> str:
    if "%" in text or "+" in text:
        return unquote_plus(text, errors="strict")
    return text


def _positive_id(where: str, raw: str) -> int:
    value = _unquote(raw)
    if value.isascii() and value.isdigit() and len(value) <= 16:
        number = int(value)
        if 0 < number <= MAX_ID:
            return number
    raise WebhookParseError(f"{where} is not a positive integer up to 2**53: {value[:24]!r}")


def subdomain_of(text: str) -> str:
    """An account's subdomain as a body or the settings spell it, compared case-insensitively:
    ``ExampleCorp`` and ``examplecorp.kommo.com`` are ``examplecorp`` (only a Kommo or amoCRM
    host suffix is taken off, so ``examplecorp.example.org`` stays what it is)."""
    value = text.strip().lower()
    for suffix in _HOST_SUFFIXES:
        if value.endswith(suffix):
            return value[: -len(suffix)]
    return value


def _link_subdomain(url: str) -> str | None:
    """The subdomain of ``account[_links][self]`` when its host is Kommo's or amoCRM's."""
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return None
    sub = subdomain_of(host)
    return sub if sub != host and sub and "." not in sub else None


def _timestamp(raw: str) -> int:
    value = _unquote(raw) if "%" in raw else raw
    if value.isascii() and value.isdigit() and len(value) <= 15:
        return int(value)
    return 0


def _index(where: str, index: str) -> None:
    if not (index.isascii() and index.isdigit() and len(index) <= 9):
        raise WebhookParseError(f"{where} index is not numeric: {index[:24]!r}")


def _kind_for(top: str, type_: str | None) -> EntityKind | None:
    """The declared kind of a record under ``top`` with this ``type`` (None: not mirrored)."""
    if top == "companies":
        return _KINDS_BY_NAME["companies"]
    for kind in ENTITY_KINDS:
        if kind.webhook_key == top and kind.webhook_type in (None, type_ or "contact"):
            return kind
    return None


class _Record:
    __slots__ = ("id", "lm", "type")

    def __init__(self) -> None:
        self.id: int | None = None
        self.lm = 0
        self.type: str | None = None


def _decode(body: bytes) -> str:
    if not body.strip():
        raise WebhookParseError("empty body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookParseError("body is not valid UTF-8") from None
    if "%" in text:
        # Brackets are most of the escapes: decode them once, to keep the scans below short.
        text = text.replace("%5B", "[").replace("%5D", "]")
    if "%" in text:
        if _BAD_PERCENT.search(text):
            raise WebhookParseError("malformed percent-encoding")
        for run in _HIGH_BYTES.findall(text):
            try:
                bytes.fromhex(run.replace("%", "")).decode("utf-8")
            except UnicodeDecodeError:
                raise WebhookParseError("percent-encoded bytes are not valid UTF-8") from None
    return text


class _Parser:
    def __init__(self) -> None:
        self.hints = Hints()
        self.records: dict[tuple[str, str, str], _Record] = {}
        self.ignored: set[tuple[str, str, str]] = set()
        self.unsorted: set[tuple[str, str]] = set()
        self.unsorted_ids: list[tuple[EntityKind, bool, int]] = []  # (kind, deleted?, id)
        self.named: dict[str, str] = {}  # "id" / "subdomain" -> where the body first named it

    def field(self, field: str) -> None:
        key, eq, value = field.partition("=")
        if not eq:
            raise WebhookParseError("not form-encoded: a field without '='")
        if "%" in key or "+" in key:
            key = _unquote(key)
        open_at = key.find("[")
        if open_at <= 0:
            return  # a bare name: not a kind, not ours
        top = key[:open_at]
        parts = key[open_at + 1 : -1].split("][", 3) if key[-1] == "]" else None
        if top == "account":
            self._account(key, value)
        elif top in _ACTIONS:
            self._entity(top, key, parts, value)
        elif top == "unsorted":
            self._unsorted(parts, value)
        elif _NAME.fullmatch(top):
            action = parts[0][:32] if parts else ""
            self.ignored.add((top, action, parts[1] if parts and len(parts) > 1 else ""))
            if parts and len(parts) == 3 and parts[2] == "account_id":
                self._account_id(f"{top}[{action}][{parts[1][:24]}][account_id]", value)

    def _account(self, key: str, value: str) -> None:
        if key == "account[id]":
            self._account_id(key, value)
        elif key == "account[subdomain]":
            self._subdomain(key, subdomain_of(_unquote(value)[:255]))
        elif key == "account[_links][self]":
            linked = _link_subdomain(_unquote(value)[:512])
            if linked is not None:
                self._subdomain(key, linked)

    def _account_id(self, where: str, value: str) -> None:
        ident, ids = _positive_id(where, value), self.hints.account_ids
        if ids and ident not in ids:
            raise WebhookParseError(f"two different accounts: {self.named['id']} and {where}")
        self.named.setdefault("id", where)
        ids.add(ident)

    def _subdomain(self, where: str, sub: str) -> None:
        hints = self.hints
        if hints.subdomain not in (None, sub):
            raise WebhookParseError(
                f"two different accounts: {self.named['subdomain']} and {where}"
            )
        self.named.setdefault("subdomain", where)
        hints.subdomain = sub

    def _unsorted(self, parts: list[str] | None, value: str) -> None:
        """One field of an incoming-lead record: its account, an id it lists, or neither."""
        action = parts[0][:32] if parts else ""
        index = parts[1][:24] if parts and len(parts) > 1 else ""
        self.unsorted.add((action, index))
        field = parts[2] if parts and len(parts) > 2 else ""
        if field == "account_id" and parts and len(parts) == 3:
            _index(f"unsorted[{action}]", index)
            self._account_id(f"unsorted[{action}][{index}][account_id]", value)
        elif field in _UNSORTED_LISTS and parts and len(parts) == 4:
            _index(f"unsorted[{action}]", index)
            self._unsorted_id(f"unsorted[{action}][{index}][{field}]", parts[3], value)

    def _unsorted_id(self, where: str, tail: str, value: str) -> None:
        """``data[leads][j][id]``, ``accept_result[leads][]``, ``decline_result[leads][j]``."""
        kind_name, _, rest = tail.partition("][")
        kind = _KINDS_BY_NAME.get(kind_name)
        position, _, field = rest.partition("][")
        listed = not where.endswith("[data]")
        if kind is None or field != ("" if listed else "id") or "]" in field:
            return  # another kind, or data[leads][j][name] and the like: not an id
        if position or not listed:
            _index(f"{where}[{kind.name}]", position)
        ident = _positive_id(f"{where}[{kind.name}][{position}]", value)
        self.unsorted_ids.append((kind, where.endswith("[decline_result]"), ident))

    def _entity(self, top: str, key: str, parts: list[str] | None, value: str) -> None:
        if parts is None:
            raise WebhookParseError(f"malformed key {key[:60]!r}")
        action = parts[0]
        if action not in _ACTIONS[top]:
            self.ignored.add((f"{top}[{action[:32]}]", parts[1] if len(parts) > 1 else "", ""))
            return
        if len(parts) < 3:
            raise WebhookParseError(f"{key[:60]!r} has no index and field")
        index, name = parts[1], parts[2]
        _index(f"{top}[{action}]", index)
        record = self.records.get((top, action, index))
        if record is None:
            record = self.records[(top, action, index)] = _Record()
        if name not in _FIELDS:
            return
        if len(parts) == 4:
            raise WebhookParseError(f"malformed key {key[:60]!r}")
        where = f"{top}[{action}][{index}][{name}]"
        if name == "id":
            ident = _positive_id(where, value)
            if record.id not in (None, ident):
                raise WebhookParseError(f"two different values for {where}")
            record.id = ident
        elif name == "account_id":
            self._account_id(where, value)
        elif name == "type":
            if top != "leads":
                kind = _unquote(value)
                if kind not in _TYPES:
                    raise WebhookParseError(f"{where} is not contact or company: {kind[:24]!r}")
                record.type = kind
        else:
            record.lm = max(record.lm, _timestamp(value))

    def finish(self) -> Hints:
        hints = self.hints
        if not self.records and not self.ignored and not self.unsorted:
            raise WebhookParseError("no leads, contacts or other Kommo entity in the body")
        for (top, action, index), record in self.records.items():
            if record.id is None:
                raise WebhookParseError(f"{top}[{action}][{index}] has no id")
            kind = _kind_for(top, record.type)
            if kind is None:  # every top key and type that reaches here names a mirrored kind
                raise WebhookParseError(f"{top}[{action}][{index}] is of no mirrored kind")
            if action == "delete":
                hints.deletes[kind.name].add(record.id)
                continue
            if action == "restore":
                hints.restores[kind.name].add(record.id)
            changes = hints.changes[kind.name]
            if record.lm > changes.get(record.id, -1):
                changes[record.id] = record.lm
        for kind, deleted, ident in self.unsorted_ids:
            if deleted:
                hints.deletes[kind.name].add(ident)
            else:
                hints.changes[kind.name].setdefault(ident, 0)
        hints.unsorted = len(self.unsorted)
        for kind in ENTITY_KINDS:
            changes, restores = hints.changes[kind.name], hints.restores[kind.name]
            for ident in hints.deletes[kind.name] - restores:
                changes.pop(ident, None)
        hints.ignored.update(kind for kind, _, _ in self.ignored)
        return hints


def parse_webhook(body: bytes) -> Hints:
    """Parse one Kommo webhook body into :class:`Hints`; raise :class:`WebhookParseError`."""
    parser = _Parser()
    for field in _decode(body).split("&"):
        if field:
            parser.field(field)
    return parser.finish()
