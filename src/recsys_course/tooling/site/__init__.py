"""Rendering lessons for the website: execute ``solutions/`` (cached) and turn the executed
notebooks into Material-for-MkDocs Markdown. :mod:`.hook` plugs this into ``mkdocs build``."""
