"""A faithful in-memory simulator of the Kommo API v4, for tests, benchmarks and demo mode.

In process::

    sim = Simulator(SimConfig(seed=1, leads=100, contacts=60, companies=20, token="t"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(sim.app)) as client: ...
    async with serve(sim, port=0) as base_url: ...   # a real HTTP server in this loop

Several accounts behind one app (each at ``<server>/<subdomain>``, one shared clock)::

    fleet = SimFleet.generate(3, SimConfig(token="t"))   # tokens t, t-2, t-3
    async with serve(fleet) as server:
        base = fleet.base_url(fleet["examplecorp2"], server)   # KOMMO_BASE_URL of account 2

``python -m kommo_sim --port P --token T [--webhook URL] …`` serves one account from a process
(at ``http://host:P``, as always); with ``--accounts N`` it serves N accounts and prints one line
per account on stdout: ``account <id> <subdomain>: base URL <url> token <token>``.

What it serves (API.md): leads, contacts, companies (lists, by id, ``filter[id]``,
``filter[updated_at]``, ``order``, 204s; ``with=contacts|loss_reason|only_deleted`` on leads,
``with=leads`` on contacts, ``with=leads,contacts`` on companies), their tags and custom field
definitions (at most 50 per page), pipelines, users, account, loss reasons
(``/api/v4/leads/loss_reasons``), events (lead_status_changed and the rest; stage history
seeded back in time), webhook subscriptions and OAuth, behind a rate limiter and fault switches.

Configuration (:class:`SimConfig`): ``seed``, ``leads``, ``contacts``, ``companies``, ``tags``,
``pipelines``, ``users``, ``token``, ``account_id``, ``subdomain``, ``timezone``,
``start_time``, ``clock_speed``, ``webhooks`` (+ ``unsorted_webhooks``), ``webhook_layouts``
(``"vary"`` default, ``"fixed"`` or a :class:`Layout`), ``history``, ``base_url``,
``rate_limit`` (:class:`RateLimitConfig`), ``oauth`` (:class:`OAuthConfig`).

Mutations (methods of :class:`Simulator`, also ``POST /_sim/mutations/{name}``; each takes
``by=`` the acting user, default the admin, 0 = a robot; missing or deleted entities raise
:class:`NotFound`, bad arguments ValueError, and a failed change changes nothing):

- leads: ``create_lead(contacts=(), tags=(), company=None, **fields)``,
  ``update_lead(id, **fields)`` (name, price, status_id, pipeline_id, responsible_user_id,
  loss_reason_id, custom_fields), ``bulk_update_leads(ids, **fields)``, ``delete_lead``,
  ``restore_lead``, ``set_lead_tags(id, names)``, ``add_lead_tag``, ``remove_lead_tag``,
  ``link_contact(lead_id, contact_id, is_main=False)``, ``unlink_contact``,
  ``link_company(lead_id, company_id)``, ``unlink_company(lead_id)``;
- contacts: ``create_contact(phones=(), tags=(), company=None, **fields)``,
  ``update_contact``, ``delete_contact``, ``restore_contact``, ``set_contact_phones(id, raws)``,
  ``set_contact_tags``, ``add_contact_tag``, ``remove_contact_tag``,
  ``link_contact_company(contact_id, company_id)``, ``unlink_contact_company(contact_id)``;
- companies: ``create_company(phones=(), tags=(), leads=(), contacts=(), **fields)``,
  ``update_company`` (name, responsible_user_id, custom_fields), ``delete_company``,
  ``restore_company``, ``set_company_phones``, ``set_company_tags``;
- custom fields: ``set_custom_fields(kind, id, {field_id: value | None})``,
  ``clear_custom_field(kind, id, field_id, keep_empty=False)``,
  ``add_custom_field(kind, name, type, code=None, options=())``,
  ``rename_custom_field(kind, field_id, name)``, ``delete_custom_field(kind, field_id)``,
  ``add_enum(kind, field_id, value, code=None)``, ``rename_enum(kind, field_id, enum_id, value)``
  (``kind``: ``leads``, ``contacts`` or ``companies``);
- loss reasons and tags: ``add_loss_reason(name)``, ``rename_loss_reason(id, name)``,
  ``rename_tag(kind, tag_id, name)``;
- incoming leads: ``create_incoming_lead(name=, contact_name=, phones=, category=, …)``,
  ``accept_incoming(lead_id, status_id=None)``, ``decline_incoming(lead_id)``;
- random: ``random_mutation(sim, rng)`` (leads, contacts, companies; never definitions).

Truth for tests: ``sim.leads``, ``sim.contacts``, ``sim.companies`` (as the API renders them,
deleted included), ``sim.lead_tags_dict`` / ``contact_tags_dict`` / ``company_tags_dict``,
``sim.custom_fields``, ``sim.loss_reasons``, ``sim.status_changes`` (every stage move: event id,
lead, time, user, before and after), ``sim.dump()`` (all of it, also ``GET /_sim/state``),
``sim.events``, ``sim.webhooks`` (``subscribe``, ``drain()``, ``attempts``, ``stats``),
``sim.faults``, ``sim.clock``, ``sim.counters``.

Production code never imports this package.
"""

from kommo_sim.churn import random_mutation
from kommo_sim.clock import SimClock
from kommo_sim.config import ALL_SETTINGS, SimConfig
from kommo_sim.engine import NotFound
from kommo_sim.faults import Faults
from kommo_sim.fields import FIELD_TYPE_IDS
from kommo_sim.fleet import SimFleet
from kommo_sim.layouts import VARIANTS, Layout
from kommo_sim.oauth import OAuthConfig
from kommo_sim.ratelimit import RateLimitConfig
from kommo_sim.server import serve, serve_app
from kommo_sim.simulator import Simulator
from kommo_sim.webhooks import DOCUMENTED_SETTINGS

__all__ = [
    "ALL_SETTINGS",
    "DOCUMENTED_SETTINGS",
    "FIELD_TYPE_IDS",
    "VARIANTS",
    "Faults",
    "Layout",
    "NotFound",
    "OAuthConfig",
    "RateLimitConfig",
    "SimClock",
    "SimConfig",
    "SimFleet",
    "Simulator",
    "random_mutation",
    "serve",
    "serve_app",
]
