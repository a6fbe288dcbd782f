"""Optional login for shared deployments (Streamlit's st.login, OIDC).

Login is on when `.streamlit/secrets.toml` has an `[auth]` section with the settings
st.login needs; `[klwatch] allowed_domains / allowed_emails` then narrow who may look.
Pure functions over the secrets mapping, so they are tested without a browser or provider.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

REQUIRED_AUTH_KEYS = ("redirect_uri", "cookie_secret")


@dataclass(frozen=True)
class LoginPolicy:
    required: bool = False
    allowed_domains: tuple[str, ...] = ()
    allowed_emails: tuple[str, ...] = ()
    problem: str | None = None  # a half-configured [auth]: refuse to serve rather than open up
    missing: list[str] = field(default_factory=list)


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value.strip().lower(),) if value.strip() else ()
    if isinstance(value, Sequence):
        return tuple(str(v).strip().lower() for v in value if str(v).strip())
    return ()


def login_policy(secrets: Mapping[str, Any]) -> LoginPolicy:
    """What the secrets ask for. No [auth] section: no login (bind to localhost instead)."""
    auth = secrets.get("auth")
    if not auth:
        return LoginPolicy()
    missing = [key for key in REQUIRED_AUTH_KEYS if not auth.get(key)]
    klwatch = secrets.get("klwatch") or {}
    policy = LoginPolicy(
        required=True,
        allowed_domains=_strings(klwatch.get("allowed_domains")),
        allowed_emails=_strings(klwatch.get("allowed_emails")),
        missing=missing,
        problem=(
            f"[auth] in .streamlit/secrets.toml lacks {', '.join(missing)}: login cannot work, "
            "so the dashboard stays closed (see docs/deploy.md)."
            if missing
            else None
        ),
    )
    return policy


def user_allowed(policy: LoginPolicy, email: str | None) -> bool:
    """Anyone the provider authenticated, unless allow-lists are set."""
    if not policy.allowed_domains and not policy.allowed_emails:
        return True
    if not email:
        return False
    email = email.strip().lower()
    domain = email.rsplit("@", 1)[-1] if "@" in email else ""
    return email in policy.allowed_emails or domain in policy.allowed_domains
