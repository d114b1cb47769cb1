"""kommo-sync: a live one-way mirror of a Kommo CRM account in PostgreSQL."""
