"""Local HTTP servers that behave like the providers' send APIs: the documented authentication, request shapes
(unknown and missing fields refused as the provider refuses them), success and error bodies, 429 with the
provider's rate-limit headers, and 5xx. Each also turns what it accepted into the provider's own webhook
payload, so a test can feed it to our webhook parser."""
