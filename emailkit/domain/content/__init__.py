"""Content: templates, their rendering (MJML, sandboxed Jinja, plain text) and the tracked links and open pixel
compiled into a campaign's HTML."""
