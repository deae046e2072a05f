"""``bayou acl check``: which rule of an ACL file decides one operation for one client."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ingress.contract.topics import TopicError, validate_topic_filter, validate_topic_name
from ingress.security.acl import Acl, Operation
from ingress.security.identity import Identity


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The answer (allowed or not) and lines that say why, for the operator."""

    allowed: bool
    lines: list[str]


def check(
    path: Path,
    operation: Operation,
    topic: str,
    user: str | None = None,
    groups: tuple[str, ...] = (),
    client_id: str = "bayou-acl-check",
) -> CheckResult:
    """Load ``path`` and decide ``operation`` on ``topic`` for that client.

    Raises SecurityConfigError for a bad file and TopicError for a bad topic.
    """
    if operation == "subscribe":
        validate_topic_filter(topic)
    else:
        validate_topic_name(topic)
    acl = Acl.load(path)
    identity = Identity(user, frozenset(groups), "acl-check" if user else "anonymous")
    decision = acl.for_client(identity, client_id).decide(operation, topic)
    verdict = "allow" if decision.allowed else "deny"
    who = f"user {user!r}" if user else "anonymous"
    if groups:
        who += f" (groups {', '.join(groups)})"
    lines = [f"{verdict}: {operation} {topic!r} by {who}, client id {client_id!r}"]
    if decision.rule is None:
        lines.append(f"  no rule matched; default = {acl.file.default!r}")
    else:
        lines.append(f"  decided by {decision.rule.describe()}")
    return CheckResult(decision.allowed, lines)


__all__ = ["CheckResult", "TopicError", "check"]
