"""Errors with stable codes that the API surfaces as ``userErrors``."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    INVALID_EMAIL = "INVALID_EMAIL"
    DUPLICATE_EMAIL = "DUPLICATE_EMAIL"
    NOT_FOUND = "NOT_FOUND"
    LIST_NOT_FOUND = "LIST_NOT_FOUND"
    TEMPLATE_NOT_FOUND = "TEMPLATE_NOT_FOUND"
    SUBSCRIBER_NOT_FOUND = "SUBSCRIBER_NOT_FOUND"
    TEMPLATE_SYNTAX = "TEMPLATE_SYNTAX"
    TEMPLATE_RENDER = "TEMPLATE_RENDER"
    TEMPLATE_SECURITY = "TEMPLATE_SECURITY"
    TEMPLATE_LIMIT = "TEMPLATE_LIMIT"
    MJML_INVALID = "MJML_INVALID"
    TOO_LONG = "TOO_LONG"
    REQUIRED = "REQUIRED"
    IN_USE = "IN_USE"
    INVALID_STATE = "INVALID_STATE"
    FORBIDDEN = "FORBIDDEN"
    INVALID_ID = "INVALID_ID"
    CAMPAIGN_NOT_FOUND = "CAMPAIGN_NOT_FOUND"
    SUPPRESSED = "SUPPRESSED"
    SEND_FAILED = "SEND_FAILED"
    INVALID_FILTER = "INVALID_FILTER"
    SEGMENT_NOT_FOUND = "SEGMENT_NOT_FOUND"
    ALREADY_SUPPRESSED = "ALREADY_SUPPRESSED"
    SUPPRESSION_NOT_FOUND = "SUPPRESSION_NOT_FOUND"
    ERASED = "ERASED"
    CONCURRENT_CHANGE = "CONCURRENT_CHANGE"
    INVALID_TEXT = "INVALID_TEXT"
    QUEUE_UNAVAILABLE = "QUEUE_UNAVAILABLE"
    # An instance key asked for workspace data without naming a workspace (X-Emailkit-Workspace).
    WORKSPACE_REQUIRED = "WORKSPACE_REQUIRED"
    WORKSPACE_NOT_FOUND = "WORKSPACE_NOT_FOUND"
    DUPLICATE_SLUG = "DUPLICATE_SLUG"
    INVALID_SLUG = "INVALID_SLUG"
    # A workspace's quota (subscribers, emails per day) would be exceeded.
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    # Outgoing webhooks: a URL that is not http(s), an event type that does not exist, a destination the SSRF
    # rule refuses (loopback, private, link-local, metadata addresses).
    INVALID_URL = "INVALID_URL"
    UNKNOWN_EVENT = "UNKNOWN_EVENT"
    DESTINATION_REFUSED = "DESTINATION_REFUSED"
    # A/B tests: not 2 to 5 variants; a number outside its allowed range (testShare, waitSeconds); two variants
    # that send the same thing; a variant that is not the campaign's; a campaign without a test; a winner
    # that was already chosen.
    VARIANT_COUNT = "VARIANT_COUNT"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    DUPLICATE_VARIANT = "DUPLICATE_VARIANT"
    VARIANT_NOT_FOUND = "VARIANT_NOT_FOUND"
    NO_AB_TEST = "NO_AB_TEST"
    WINNER_ALREADY_CHOSEN = "WINNER_ALREADY_CHOSEN"
    # Not an IANA timezone name this server knows (a subscriber's timezone attribute, a list's default).
    INVALID_TIMEZONE = "INVALID_TIMEZONE"
    # Flows: a step key used twice, an exit naming no step, a loop with no WAIT, a flow that does not exist.
    DUPLICATE_STEP_KEY = "DUPLICATE_STEP_KEY"
    UNKNOWN_STEP = "UNKNOWN_STEP"
    CYCLE_WITHOUT_WAIT = "CYCLE_WITHOUT_WAIT"
    FLOW_NOT_FOUND = "FLOW_NOT_FOUND"
    # Custom events: a name outside letters, digits and `_ . : -`; a batch of more than 1,000 events.
    INVALID_EVENT_NAME = "INVALID_EVENT_NAME"
    TOO_MANY_EVENTS = "TOO_MANY_EVENTS"
    # Senders: a name used twice in a workspace; a type this server cannot send through; settings or
    # credentials the provider refuses to be built from (the field names the key, e.g. settings.url).
    DUPLICATE_NAME = "DUPLICATE_NAME"
    INVALID_SENDER_TYPE = "INVALID_SENDER_TYPE"
    INVALID_SENDER_SETTINGS = "INVALID_SENDER_SETTINGS"
    INVALID_SENDER_CREDENTIALS = "INVALID_SENDER_CREDENTIALS"
    # Sending domains: not a registrable-looking host name (an IP, a trailing dot, a bad label); a domain the
    # workspace has already; one that does not exist; a From address whose domain is not a verified sending
    # domain of the workspace while EMAILKIT_REQUIRE_VERIFIED_DOMAINS is on.
    INVALID_DOMAIN = "INVALID_DOMAIN"
    DUPLICATE_DOMAIN = "DUPLICATE_DOMAIN"
    SENDING_DOMAIN_NOT_FOUND = "SENDING_DOMAIN_NOT_FOUND"
    DOMAIN_NOT_VERIFIED = "DOMAIN_NOT_VERIFIED"


@dataclass(frozen=True)
class FieldError:
    field: str | None
    message: str
    code: ErrorCode


class DomainError(Exception):
    """One or more problems with the caller's input; nothing was changed."""

    def __init__(self, errors: list[FieldError] | FieldError) -> None:
        self.errors = errors if isinstance(errors, list) else [errors]
        super().__init__("; ".join(e.message for e in self.errors))

    @classmethod
    def single(cls, code: ErrorCode, message: str, field: str | None = None) -> DomainError:
        return cls(FieldError(field=field, message=message, code=code))


class NotFound(DomainError):
    def __init__(self, what: str, field: str | None = "id", code: ErrorCode = ErrorCode.NOT_FOUND) -> None:
        super().__init__(FieldError(field=field, message=f"{what} not found", code=code))
