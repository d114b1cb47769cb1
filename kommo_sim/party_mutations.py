"""Mutations of contacts and companies (both "parties" to a lead; both webhooked as
``contacts[...]`` with a ``[type]``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kommo_sim.edits import apply_party_fields
from kommo_sim.engine import Engine
from kommo_sim.fields import COMPANY_PHONE, CONTACT_PHONE
from kommo_sim.render import JSON
from kommo_sim.seed import phone_values
from kommo_sim.state import Company, Contact, Kind


class PartyMutations(Engine):
    # ----- contacts -----

    def create_contact(
        self,
        *,
        phones: Sequence[str] = (),
        tags: Sequence[str] = (),
        company: int | None = None,
        by: int | None = None,
        **fields: Any,
    ) -> JSON:
        now = self.clock.now_s()
        user = self._user(by)
        contact = Contact(self.state.new_id("contacts"), "", "", "", user, user, user, now, now)
        apply_party_fields(self.state, contact, fields)
        if phones:
            contact.custom_fields[CONTACT_PHONE] = phone_values(list(phones), self.faults.rng)
        contact.tags = [self.state.tag_by_name("contacts", n).id for n in tags]
        with self._batch() as items:
            self._added(items, "contacts", contact, user)
            if company is not None:
                self._set_company(items, contact, company, user)
        return self.renderer.contact(contact, self.base_url, with_leads=True)

    def update_contact(self, contact_id: int, *, by: int | None = None, **fields: Any) -> JSON:
        """Change any of name, first_name, last_name, responsible_user_id, custom_fields."""
        self._edit("contacts", contact_id, by, lambda c: apply_party_fields(self.state, c, fields))
        return self.renderer.contact(self._contact(contact_id), self.base_url, with_leads=True)

    def delete_contact(self, contact_id: int, *, by: int | None = None) -> None:
        self._edit("contacts", contact_id, by, _deleted(True), "delete")

    def restore_contact(self, contact_id: int, *, by: int | None = None) -> None:
        self._edit("contacts", contact_id, by, _deleted(False), "restore")

    def set_contact_phones(
        self, contact_id: int, raws: Sequence[str], *, by: int | None = None
    ) -> None:
        values = phone_values(list(raws), self.faults.rng)
        self._edit("contacts", contact_id, by, _phones(CONTACT_PHONE, values))

    def set_contact_tags(
        self, contact_id: int, names: Sequence[str], *, by: int | None = None
    ) -> None:
        self._set_tags("contacts", contact_id, names, by)

    def add_contact_tag(self, contact_id: int, name: str, *, by: int | None = None) -> None:
        current = self._tag_names("contacts", self._contact(contact_id).tags)
        self.set_contact_tags(
            contact_id, current + [name] if name not in current else current, by=by
        )

    def remove_contact_tag(self, contact_id: int, name: str, *, by: int | None = None) -> None:
        current = self._tag_names("contacts", self._contact(contact_id).tags)
        self.set_contact_tags(contact_id, [n for n in current if n != name], by=by)

    def link_contact_company(
        self, contact_id: int, company_id: int, *, by: int | None = None
    ) -> None:
        """Make ``company_id`` the contact's company (at most one; this replaces it)."""
        with self._batch() as items:
            self._set_company(items, self._contact(contact_id), company_id, by)

    def unlink_contact_company(self, contact_id: int, *, by: int | None = None) -> None:
        with self._batch() as items:
            self._set_company(items, self._contact(contact_id), None, by)

    # ----- companies -----

    def create_company(
        self,
        *,
        phones: Sequence[str] = (),
        tags: Sequence[str] = (),
        leads: Sequence[int] = (),
        contacts: Sequence[int] = (),
        by: int | None = None,
        **fields: Any,
    ) -> JSON:
        """Create a company, linked to ``leads`` and ``contacts`` (each leaves its old company)."""
        now = self.clock.now_s()
        user = self._user(by)
        company = Company(self.state.new_id("companies"), "", user, user, user, now, now)
        apply_party_fields(self.state, company, fields)
        field = self.state.fields_of("companies")[COMPANY_PHONE]
        if phones:
            company.custom_fields[COMPANY_PHONE] = phone_values(
                list(phones), self.faults.rng, field
            )
        company.tags = [self.state.tag_by_name("companies", n).id for n in tags]
        owners = [self._lead(i) for i in leads] + [self._contact(i) for i in contacts]
        company.leads = dict.fromkeys(leads)  # the add webhook already names its leads
        with self._batch() as items:
            self._added(items, "companies", company, user)
            company.leads = {}
            for owner in owners:
                self._set_company(items, owner, company.id, user)
        return self.renderer.company(company, self.base_url, with_leads=True, with_contacts=True)

    def update_company(self, company_id: int, *, by: int | None = None, **fields: Any) -> JSON:
        """Change any of name, responsible_user_id, custom_fields."""
        self._edit("companies", company_id, by, lambda c: apply_party_fields(self.state, c, fields))
        company = self._company(company_id)
        return self.renderer.company(company, self.base_url, with_leads=True, with_contacts=True)

    def delete_company(self, company_id: int, *, by: int | None = None) -> None:
        """Move a company to the trash; leads and contacts stop showing it (unchanged)."""
        self._edit("companies", company_id, by, _deleted(True), "delete")

    def restore_company(self, company_id: int, *, by: int | None = None) -> None:
        self._edit("companies", company_id, by, _deleted(False), "restore")

    def set_company_phones(
        self, company_id: int, raws: Sequence[str], *, by: int | None = None
    ) -> None:
        field = self.state.fields_of("companies")[COMPANY_PHONE]
        values = phone_values(list(raws), self.faults.rng, field)
        self._edit("companies", company_id, by, _phones(COMPANY_PHONE, values))

    def set_company_tags(
        self, company_id: int, names: Sequence[str], *, by: int | None = None
    ) -> None:
        self._set_tags("companies", company_id, names, by)

    # ----- shared -----

    def _edit(
        self, kind: Kind, entity_id: int, by: int | None, edit: Any, action: Any = "update"
    ) -> None:
        with self._batch() as items:
            self._change(items, kind, entity_id, by, edit, action)

    def _set_tags(self, kind: Kind, entity_id: int, names: Sequence[str], by: int | None) -> None:
        self._get(kind, entity_id)
        ids = [self.state.tag_by_name(kind, n).id for n in names]
        self._edit(kind, entity_id, by, lambda e: setattr(e, "tags", ids))

    def _tag_names(self, kind: Kind, ids: list[int]) -> list[str]:
        tags = self.state.tags_of(kind)
        return [tags[t].name for t in ids if t in tags]


def _deleted(flag: bool) -> Any:
    return lambda entity: setattr(entity, "is_deleted", flag)


def _phones(field_id: int, values: list[Any]) -> Any:
    def edit(party: Contact | Company) -> None:
        if values:
            party.custom_fields[field_id] = values
        else:
            party.custom_fields.pop(field_id, None)

    return edit
