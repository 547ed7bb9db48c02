"""Host-toolkit integrations; each imports its host lazily."""
