"""Mutations of leads: create, update (in bulk too), delete, restore, tags, links."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from kommo_sim.edits import apply_lead_fields
from kommo_sim.engine import Engine
from kommo_sim.render import JSON
from kommo_sim.state import Lead


class LeadMutations(Engine):
    def create_lead(
        self,
        *,
        contacts: Sequence[int] = (),
        tags: Sequence[str] = (),
        company: int | None = None,
        by: int | None = None,
        **fields: Any,
    ) -> JSON:
        """Create a lead (in the main pipeline's first stage unless ``pipeline_id`` /
        ``status_id`` say otherwise); ``contacts`` are linked in order (the first is main)."""
        pipeline = self.state.pipelines[0]
        now = self.clock.now_s()
        user = self._user(by)
        lead = Lead(
            self.state.new_id("leads"),
            "",
            0,
            user,
            pipeline.first_open().id,
            pipeline.id,
            user,
            user,
            now,
            now,
        )
        apply_lead_fields(self.state, lead, fields, now)
        lead.tags = [self.state.tag_by_name("leads", n).id for n in tags]
        with self._batch() as items:
            self._added(items, "leads", lead, user)
            for contact_id in contacts:
                self._link(
                    items, lead, self._contact(contact_id), is_main=not lead.contacts, by=user
                )
            if company is not None:
                self._set_company(items, lead, company, user)
        return self.renderer.lead(lead, self.base_url, with_contacts=True)

    def update_lead(self, lead_id: int, *, by: int | None = None, **fields: Any) -> JSON:
        """Change any of name, price, status_id, pipeline_id, responsible_user_id,
        loss_reason_id, custom_fields ({field_id: value or None})."""
        return self.bulk_update_leads([lead_id], by=by, **fields)[0]

    def bulk_update_leads(
        self, ids: Iterable[int], *, by: int | None = None, **fields: Any
    ) -> list[JSON]:
        """The same change to several leads, delivered as one webhook body."""
        ids = list(ids)
        now = self.clock.now_s()
        with self._batch() as items:
            for lead_id in ids:
                self._change(
                    items,
                    "leads",
                    lead_id,
                    by,
                    lambda lead: apply_lead_fields(self.state, lead, fields, now),
                )
        return [
            self.renderer.lead(self.state.leads.rows[i], self.base_url, with_contacts=True)
            for i in ids
        ]

    def delete_lead(self, lead_id: int, *, by: int | None = None) -> None:
        with self._batch() as items:
            self._change(
                items,
                "leads",
                lead_id,
                by,
                lambda lead: setattr(lead, "is_deleted", True),
                "delete",
            )

    def restore_lead(self, lead_id: int, *, by: int | None = None) -> None:
        with self._batch() as items:
            self._change(
                items,
                "leads",
                lead_id,
                by,
                lambda lead: setattr(lead, "is_deleted", False),
                "restore",
            )

    def set_lead_tags(self, lead_id: int, names: Sequence[str], *, by: int | None = None) -> None:
        self._lead(lead_id)
        ids = [self.state.tag_by_name("leads", n).id for n in names]
        with self._batch() as items:
            self._change(items, "leads", lead_id, by, lambda lead: setattr(lead, "tags", ids))

    def add_lead_tag(self, lead_id: int, name: str, *, by: int | None = None) -> None:
        current = [self.state.lead_tags[t].name for t in self._lead(lead_id).tags]
        self.set_lead_tags(lead_id, current + [name] if name not in current else current, by=by)

    def remove_lead_tag(self, lead_id: int, name: str, *, by: int | None = None) -> None:
        current = [self.state.lead_tags[t].name for t in self._lead(lead_id).tags]
        self.set_lead_tags(lead_id, [n for n in current if n != name], by=by)

    def link_contact(
        self, lead_id: int, contact_id: int, is_main: bool = False, *, by: int | None = None
    ) -> None:
        with self._batch() as items:
            self._link(items, self._lead(lead_id), self._contact(contact_id), is_main, by)

    def unlink_contact(self, lead_id: int, contact_id: int, *, by: int | None = None) -> None:
        lead, contact = self._lead(lead_id), self._contact(contact_id)
        user = self._user(by)
        with self._batch() as items:
            lead_before, contact_before = lead.clone(), contact.clone()
            was_main = lead.contacts.pop(contact_id, False)
            contact.leads.pop(lead_id, None)
            if was_main and lead.contacts:
                lead.contacts[next(iter(lead.contacts))] = True
            self._commit(items, "leads", lead_before, lead, user, "update")
            self._commit(items, "contacts", contact_before, contact, user, "update")

    def link_company(self, lead_id: int, company_id: int, *, by: int | None = None) -> None:
        """Make ``company_id`` the lead's company (a lead has at most one; this replaces it)."""
        with self._batch() as items:
            self._set_company(items, self._lead(lead_id), company_id, by)

    def unlink_company(self, lead_id: int, *, by: int | None = None) -> None:
        with self._batch() as items:
            self._set_company(items, self._lead(lead_id), None, by)
