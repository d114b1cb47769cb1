"""Incoming leads (Kommo's "unsorted"): created in a pipeline's Incoming-leads stage
(status type 1), then accepted into a normal stage or declined.

What is documented and what is not:

- the bodies: ``unsorted[add]`` and, for accept/decline, ``unsorted[delete][i][action]``
  with ``accept_result`` / ``decline_result`` [A webhooks-format, "Примеры массивов
  неразобранного"]; Kommo's webhook page lists "Incoming lead added / edited / deleted" [K];
- no setting name for them is documented (amoCRM's list of ``settings`` has none, Kommo's API
  reference names none), so a destination gets them only when the simulator is told to
  (``SimConfig.unsorted_webhooks`` for its configured destinations,
  ``sim.webhooks.subscribe(..., unsorted=True)``, ``POST /_sim/webhooks/unsorted``);
- [INF] the lead and its contact are ordinary entities meanwhile (``leads[add]`` and
  ``contacts[add]`` webhooks, the contact ``is_unsorted: true``); accepting moves the lead
  (``leads[update]``/``[status]``, a ``lead_status_changed`` event) and clears
  ``is_unsorted``; declining deletes the lead and its unsorted contacts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from kommo_sim.edits import apply_lead_fields
from kommo_sim.engine import Engine
from kommo_sim.fields import CONTACT_PHONE
from kommo_sim.payloads import UNSORTED, WebhookItem, unsorted_add_pairs, unsorted_delete_pairs
from kommo_sim.render import JSON
from kommo_sim.seed import phone_values
from kommo_sim.state import Contact, Incoming, Lead

CATEGORIES = ("forms", "sip", "mail", "chats")


class IncomingMutations(Engine):
    def create_incoming_lead(
        self,
        *,
        name: str = "",
        contact_name: str | None = None,
        phones: Sequence[str] = (),
        category: str = "forms",
        source: str = "Website form",
        pipeline_id: int | None = None,
        price: int = 0,
    ) -> JSON:
        """A new unsorted entry: a lead in the Incoming-leads stage (created by the system,
        ``created_by`` 0), with a new contact when ``contact_name`` is given."""
        if category not in CATEGORIES:
            raise ValueError(f"category must be one of {list(CATEGORIES)}")
        pipeline = (
            self.state.pipelines[0] if pipeline_id is None else self.state.pipeline(pipeline_id)
        )
        now, admin = self.clock.now_s(), self.state.users[0].id
        lead_id = self.state.new_id("leads")
        lead = Lead(
            lead_id, name, price, admin, pipeline.incoming().id, pipeline.id, 0, 0, now, now
        )
        uid = hashlib.sha256(f"{self.state.account.id}:{lead_id}".encode()).hexdigest()[:60]
        lead.incoming = Incoming(uid, category, source, now)
        with self._batch() as items:
            self._added(items, "leads", lead, 0)
            if contact_name is not None:
                contact = Contact(
                    self.state.new_id("contacts"), contact_name, "", "", admin, 0, 0, now, now
                )
                contact.is_unsorted = True
                if phones:
                    values = phone_values(list(phones), self.faults.rng)
                    contact.custom_fields[CONTACT_PHONE] = values
                self._added(items, "contacts", contact, 0)
                self._link(items, lead, contact, True, 0)
            items.append(
                WebhookItem(UNSORTED, "unsorted", "add", unsorted_add_pairs(self.state, lead))
            )
        return self.renderer.lead(lead, self.base_url, with_contacts=True)

    def accept_incoming(
        self, lead_id: int, *, status_id: int | None = None, by: int | None = None
    ) -> JSON:
        """Accept an unsorted entry: the lead moves to ``status_id`` (default: the pipeline's
        first normal stage) and its contacts stop being unsorted."""
        lead, incoming = self._incoming(lead_id)
        pipeline = self.state.pipeline(lead.pipeline_id)
        target = pipeline.first_open().id if status_id is None else status_id
        if self.state.status(pipeline.id, target).type == 1:
            raise ValueError("an accepted lead goes to a normal stage, not Incoming leads")
        now = self.clock.now_s()
        with self._batch() as items:
            self._change(
                items,
                "leads",
                lead_id,
                by,
                lambda entry: apply_lead_fields(self.state, entry, {"status_id": target}, now),
            )
            for contact_id in lead.contacts:
                if self.state.contacts.rows[contact_id].is_unsorted:
                    self._change(
                        items,
                        "contacts",
                        contact_id,
                        by,
                        lambda c: setattr(c, "is_unsorted", False),
                    )
            pairs = unsorted_delete_pairs(incoming, lead, "accept", now)
            items.append(WebhookItem(UNSORTED, "unsorted", "delete", pairs))
        return self.renderer.lead(lead, self.base_url, with_contacts=True)

    def decline_incoming(self, lead_id: int, *, by: int | None = None) -> None:
        """Decline an unsorted entry: the lead and its unsorted contacts are deleted."""
        lead, incoming = self._incoming(lead_id)
        with self._batch() as items:
            pairs = unsorted_delete_pairs(incoming, lead, "decline", self.clock.now_s())
            self._change(items, "leads", lead_id, by, _decline, "delete")
            for contact_id in list(lead.contacts):
                if self.state.contacts.rows[contact_id].is_unsorted:
                    self._change(items, "contacts", contact_id, by, _decline, "delete")
            items.append(WebhookItem(UNSORTED, "unsorted", "delete", pairs))

    def _incoming(self, lead_id: int) -> tuple[Lead, Incoming]:
        lead = self._lead(lead_id)
        if lead.incoming is None:
            raise ValueError(f"lead {lead_id} is not an unsorted entry")
        return lead, lead.incoming


def _decline(entity: Lead | Contact) -> None:
    entity.is_deleted = True
    if isinstance(entity, Lead):
        entity.incoming = None
