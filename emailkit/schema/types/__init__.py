"""The API's object types, one module per area, and the only modules that refer to a type lazily.

The GraphQL graph has cycles (a campaign lists its deliveries, a delivery names its campaign); the modules that
define it must not. Each cycle is cut at one edge, a lazy reference (see :mod:`emailkit.schema.types.lazy`):
Delivery.campaign, Event.campaign and Event.subscriber. Every other field imports the type it returns. Queries,
mutations and subscriptions import these modules, never the other way round; the import contracts in
pyproject.toml keep it so.
"""
