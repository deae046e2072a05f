"""ACL evaluation: the rules of the ACL file, first match wins, for one client at a time.

:meth:`Acl.for_client` picks the rules whose subject is the client (user, group, anonymous,
everyone) and substitutes ``%u`` / ``%c`` once; the :class:`ClientAcl` it returns answers, per
operation, whether the first rule that matches allows it (else the file's ``default``):

- publish: the topic name matches one of the rule's topic filters;
- subscribe: the requested filter is covered by one of them (:func:`covers`: every topic the
  filter matches, the rule's filter matches);
- receive (delivery of a message): the topic name matches a filter of a subscribe/all rule.
  So ``deny subscribe secret/#`` before ``allow subscribe #`` lets a client subscribe to ``#``
  and still never receive ``secret/x``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ingress.contract.topics import matches
from ingress.security.acl_file import AclFile, Rule, load_acl_file
from ingress.security.identity import Identity

Operation = Literal["publish", "subscribe", "receive"]
OPERATIONS: tuple[Operation, ...] = ("publish", "subscribe", "receive")
# Topics remembered per connection for publish and receive; cleared when full (cheaper than
# an LRU on the hot path, and a client cycling through more topics than this is rare).
CACHE_SIZE = 4096
_PLACEHOLDER = re.compile(r"%[uc]")
_UNSAFE = ("+", "#", "/", "\x00")


def covers(pattern: str, filt: str) -> bool:
    """True when every topic name that filter ``filt`` matches, filter ``pattern`` matches.

    Both must be valid filters. ``sensors/#`` covers ``sensors/+/x``; ``sensors/+/x`` does not
    cover ``sensors/#``. Topics starting with ``$`` are matched by no filter starting with a
    wildcard [MQTT-4.7.2-1], so ``#`` does not cover ``$SYS/#``.
    """
    p = pattern.split("/")
    f = filt.split("/")
    if f[0].startswith("$") and p[0] in ("+", "#"):
        return False
    for i, level in enumerate(f):
        if i >= len(p):
            return False  # the filter matches longer topics than the pattern
        if p[i] == "#":
            return True
        if level == "#":
            # The filter matches f[:i] plus any number of levels (at least one when i == 0:
            # a topic has a level). Only "#" (handled above) or, at the top, "+/#" match all.
            return i == 0 and p == ["+", "#"]
        if p[i] != "+" and p[i] != level:
            return False
    # The filter matches topics of exactly len(f) levels; "x/#" also matches its parent "x".
    return len(p) == len(f) or (len(p) == len(f) + 1 and p[-1] == "#")


def substitute(pattern: str, username: str | None, client_id: str | None) -> str | None:
    """``pattern`` with ``%u`` / ``%c`` replaced, or None when it must match nothing.

    A value that is empty, absent, or holds ``+``, ``#`` or ``/`` would widen the pattern
    (``%c`` = ``#``), and one that turns the pattern into a ``$`` topic would reach the
    broker's own topics: the pattern then matches nothing for this client.
    """
    if "%" not in pattern:
        return pattern
    values = {"%u": username, "%c": client_id}
    for token, value in values.items():
        if token in pattern and (not value or any(c in value for c in _UNSAFE)):
            return None
    # One pass, so that a username holding "%c" is not substituted again.
    out = _PLACEHOLDER.sub(lambda m: values[m.group()] or "", pattern)
    if out.startswith("$") and not pattern.startswith("$"):
        return None
    return out


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one check and the rule that decided it (None: the file's default)."""

    allowed: bool
    rule: Rule | None


@dataclass(frozen=True, slots=True)
class _ClientRule:
    """A rule whose subject is this client, with its topics substituted."""

    allow: bool
    patterns: tuple[str, ...]
    rule: Rule


class ClientAcl:
    """What one connection may do; built once per connection by :meth:`Acl.for_client`."""

    def __init__(
        self, rules: Sequence[_ClientRule], default_allow: bool, cache_size: int = CACHE_SIZE
    ) -> None:
        self.default_allow = default_allow
        self._publish = [r for r in rules if r.rule.action in ("publish", "all")]
        self._subscribe = [r for r in rules if r.rule.action in ("subscribe", "all")]
        self._cache_size = cache_size
        self._publish_cache: dict[str, bool] = {}
        self._receive_cache: dict[str, bool] = {}

    def publish(self, topic: str) -> bool:
        """May this client publish to topic name ``topic``?"""
        allowed = self._publish_cache.get(topic)
        if allowed is None:
            allowed = self._first(self._publish, matches, topic).allowed
            self._remember(self._publish_cache, topic, allowed)
        return allowed

    def subscribe(self, topic_filter: str) -> bool:
        """May this client subscribe to ``topic_filter``?"""
        return self._first(self._subscribe, covers, topic_filter).allowed

    def receive(self, topic: str) -> bool:
        """May a message on topic name ``topic`` be delivered to this client?"""
        # Called per delivered message: a dict lookup in the common case.
        allowed = self._receive_cache.get(topic)
        if allowed is None:
            allowed = self._first(self._subscribe, matches, topic).allowed
            self._remember(self._receive_cache, topic, allowed)
        return allowed

    def decide(self, operation: Operation, topic: str) -> Decision:
        """Like the checks above (uncached), with the rule that decided."""
        if operation == "publish":
            return self._first(self._publish, matches, topic)
        if operation == "subscribe":
            return self._first(self._subscribe, covers, topic)
        return self._first(self._subscribe, matches, topic)

    def _first(
        self, rules: list[_ClientRule], test: Callable[[str, str], bool], topic: str
    ) -> Decision:
        for r in rules:
            for pattern in r.patterns:
                if test(pattern, topic):
                    return Decision(r.allow, r.rule)
        return Decision(self.default_allow, None)

    def _remember(self, cache: dict[str, bool], topic: str, allowed: bool) -> None:
        if len(cache) >= self._cache_size:
            cache.clear()
        cache[topic] = allowed


class Acl:
    """The rules of one ACL file; :meth:`for_client` specialises them to a connection."""

    def __init__(self, file: AclFile) -> None:
        self.file = file

    @classmethod
    def load(cls, path: Path) -> Acl:
        """Read ``path`` (TOML or YAML); raises SecurityConfigError naming file, line, rule."""
        return cls(load_acl_file(path))

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules, in file order."""
        return self.file.rules

    def for_client(self, identity: Identity, client_id: str) -> ClientAcl:
        """The rules that apply to this identity and client id, substituted once."""
        mine: list[_ClientRule] = []
        for rule in self.file.rules:
            if not _is_subject(rule, identity):
                continue
            patterns = [substitute(t, identity.username, client_id) for t in rule.topics]
            kept = tuple(p for p in patterns if p is not None)
            if kept:
                mine.append(_ClientRule(rule.permission == "allow", kept, rule))
        return ClientAcl(mine, self.file.default == "allow")


def _is_subject(rule: Rule, identity: Identity) -> bool:
    if rule.subject == "user":
        return identity.username is not None and identity.username == rule.name
    if rule.subject == "group":
        return rule.name in identity.groups
    if rule.subject == "anonymous":
        return identity.anonymous
    return True  # everyone
