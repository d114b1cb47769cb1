"""The migrations, shipped as package data (read by service.store.migrations)."""
