"""arq worker settings and thin job functions."""
