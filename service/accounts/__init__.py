"""Many accounts in one deployment: the registry of accounts beyond the environment's own.

``registry`` (register, check a credential against its account, remove and purge), ``secrets``
(``SECRETS_KEY``: encryption at rest, digests), ``credentials`` (the token source of a
registered account), ``consumers`` (consumer tokens scoped to accounts), ``install`` (the
public integration's OAuth install and uninstall routes), ``state`` (the signed, single-use
OAuth ``state``), ``lifetime`` (when a long-lived token expires), ``commands`` (``kommo-sync
accounts …``). The SQL is :mod:`service.store.accounts`.

The environment's single account (``KOMMO_SUBDOMAIN``, ``KOMMO_TOKEN``, …) is not in the
registry and needs none of this.
"""
