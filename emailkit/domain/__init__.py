"""The model and the use cases. Never imports strawberry, dramatiq, starlette, httpx or a provider."""
