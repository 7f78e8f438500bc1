"""Input checks shared by the services."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

from emailkit.domain.errors import DomainError, ErrorCode, FieldError


def normalize_email(raw: str, field: str = "email") -> str:
    """Syntax-check an address and return it lower-cased (no DNS look-up: imports must stay fast)."""
    value = (raw or "").strip()
    if not value:
        raise DomainError.single(ErrorCode.REQUIRED, "Email is required", field)
    try:
        info = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise DomainError.single(ErrorCode.INVALID_EMAIL, f"Invalid email address: {exc}", field) from None
    return info.normalized.lower()


def check_length(errors: list[FieldError], field: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        errors.append(FieldError(field, f"Must be at most {limit} characters", ErrorCode.TOO_LONG))


def require(errors: list[FieldError], field: str, value: str | None, what: str) -> None:
    if value is None or not value.strip():
        errors.append(FieldError(field, f"{what} is required", ErrorCode.REQUIRED))


def raise_if(errors: list[FieldError]) -> None:
    if errors:
        raise DomainError(errors)
