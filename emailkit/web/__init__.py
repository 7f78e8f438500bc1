"""HTTP surface: the GraphQL view, health routes, and (later) webhooks and public tracking routes."""
