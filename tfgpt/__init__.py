"""tfgpt."""
