"""ACL evaluation: first match wins, subjects, %u/%c substitution, filter coverage, receive."""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ingress.contract.topics import matches
from ingress.security.acl import Acl, covers, substitute
from ingress.security.identity import ANONYMOUS, Identity

ALICE = Identity("alice", frozenset({"ops"}), "password_file")
BOB = Identity("bob", frozenset(), "password_file")


def acl(tmp_path: Path, text: str) -> Acl:
    path = tmp_path / "acl.toml"
    path.write_text(text)
    return Acl.load(path)


# --- covers: the subset relation between topic filters -------------------------------------

_LITERALS = ["a", "b", "$s", ""]
_TOPIC_LEVELS = [*_LITERALS, "z", "$z"]  # z, $z: values no filter names


def _filters(max_levels: int = 3) -> st.SearchStrategy[str]:
    level = st.sampled_from([*_LITERALS, "+"])

    def build(levels: list[str], hash_end: bool) -> str:
        return "/".join([*levels, "#"] if hash_end else levels) if levels or hash_end else "a"

    built = st.builds(build, st.lists(level, max_size=max_levels), st.booleans())
    return built.filter(bool)  # "" is no valid filter


def _brute_covers(pattern: str, filt: str) -> bool:
    """Every topic (up to one level deeper than both filters) that filt matches, pattern does."""
    depth = max(pattern.count("/"), filt.count("/")) + 2
    for n in range(1, depth + 1):
        for levels in itertools.product(_TOPIC_LEVELS, repeat=n):
            topic = "/".join(levels)
            if topic and matches(filt, topic) and not matches(pattern, topic):
                return False
    return True


@settings(max_examples=400, deadline=None)
@given(_filters(), _filters())
def test_covers_is_the_subset_relation(pattern: str, filt: str) -> None:
    assert covers(pattern, filt) == _brute_covers(pattern, filt), (pattern, filt)


def test_covers_examples() -> None:
    assert covers("sensors/#", "sensors/+/x")
    assert not covers("sensors/+/x", "sensors/#")
    assert covers("sensors/#", "sensors")  # '#' includes the parent level
    assert covers("+/#", "#")
    assert not covers("a/+/#", "a/#")
    # [MQTT-4.7.2-1]: a filter starting with a wildcard matches no '$' topic.
    assert not covers("#", "$SYS/#")
    assert not covers("+/x", "$SYS/x")
    assert covers("$SYS/#", "$SYS/+")


# --- substitution --------------------------------------------------------------------------


def test_substitute_replaces_once() -> None:
    assert substitute("sensors/%c/#", "alice", "dev1") == "sensors/dev1/#"
    assert substitute("u/%u/c/%c", "alice", "dev1") == "u/alice/c/dev1"
    assert substitute("dev-%c/x", None, "7") == "dev-7/x"
    # A username holding "%c" is not substituted a second time.
    assert substitute("u/%u", "a%c", "dev1") == "u/a%c"


def test_substitute_never_widens() -> None:
    for bad in (None, "", "#", "+", "a/b", "a+", "x#"):
        assert substitute("sensors/%c/#", "alice", bad) is None, bad
        assert substitute("users/%u", bad, "dev1") is None, bad
    # A client id that would turn the pattern into the broker's own '$' topics.
    assert substitute("%c/#", "alice", "$SYS") is None
    assert substitute("$SYS/%c", "alice", "x") == "$SYS/x"


def test_unsafe_client_id_matches_nothing(tmp_path: Path) -> None:
    rules = acl(
        tmp_path,
        """
default = "deny"
[[rules]]
permission = "allow"
action = "all"
topics = ["sensors/%c/#"]
everyone = true
""",
    )
    assert rules.for_client(BOB, "dev1").publish("sensors/dev1/t")
    assert not rules.for_client(BOB, "dev1").publish("sensors/dev2/t")
    for bad in ("#", "+", "a/b", ""):
        client = rules.for_client(BOB, bad)
        assert not client.publish("sensors/a/b/t")
        assert not client.subscribe("sensors/#")
        assert not client.receive("sensors/x/t")


# --- first match, subjects, actions --------------------------------------------------------

RULES = """
default = "deny"

[[rules]]
permission = "deny"
action = "subscribe"
topics = ["secret/#"]
everyone = true

[[rules]]
permission = "allow"
action = "all"
topics = ["#"]
group = "ops"

[[rules]]
permission = "allow"
action = "publish"
topics = ["sensors/%c/telemetry"]
user = "bob"

[[rules]]
permission = "allow"
action = "subscribe"
topics = ["dashboards/#", "sensors/+/telemetry"]
anonymous = true
"""


def test_first_match_wins_and_default(tmp_path: Path) -> None:
    rules = acl(tmp_path, RULES)
    ops = rules.for_client(ALICE, "console")
    assert ops.publish("anything/at/all")
    assert ops.subscribe("#")
    assert not ops.subscribe("secret/+")  # rule 1 comes first
    bob = rules.for_client(BOB, "dev7")
    assert bob.publish("sensors/dev7/telemetry")
    assert not bob.publish("sensors/dev8/telemetry")  # default deny
    assert not bob.subscribe("sensors/dev7/telemetry")  # rule 3 is publish only
    anon = rules.for_client(ANONYMOUS, "screen")
    assert anon.subscribe("sensors/+/telemetry")
    assert anon.subscribe("dashboards/plant1/+")
    assert not anon.subscribe("sensors/#")  # wider than what rule 4 allows
    assert not anon.publish("dashboards/plant1")
    assert anon.decide("publish", "dashboards/plant1").rule is None


def test_receive_applies_deny_inside_an_allowed_subscription(tmp_path: Path) -> None:
    """deny subscribe secret/# before allow subscribe #: '#' is allowed, secret/x not delivered."""
    rules = acl(tmp_path, RULES)
    ops = rules.for_client(ALICE, "console")
    assert ops.subscribe("#")
    assert ops.receive("plant/x")
    assert not ops.receive("secret/x")
    assert not ops.receive("secret/x")  # from the cache, same answer
    decision = ops.decide("receive", "secret/x")
    assert not decision.allowed and decision.rule is not None and decision.rule.index == 1


def test_receive_of_dollar_topics_follows_mqtt(tmp_path: Path) -> None:
    rules = acl(tmp_path, RULES)
    ops = rules.for_client(ALICE, "console")
    assert not ops.receive("$SYS/broker/uptime")  # '#' does not match '$' topics


def test_default_allow(tmp_path: Path) -> None:
    rules = acl(
        tmp_path,
        """
default = "allow"
[[rules]]
permission = "deny"
action = "publish"
topics = ["cmd/#"]
user = "bob"
""",
    )
    bob = rules.for_client(BOB, "b")
    assert not bob.publish("cmd/x")
    assert bob.subscribe("cmd/#") and bob.receive("cmd/x")
    assert rules.for_client(ALICE, "a").publish("cmd/x")


def test_user_rule_never_matches_anonymous(tmp_path: Path) -> None:
    rules = acl(
        tmp_path,
        """
[[rules]]
permission = "allow"
action = "all"
topics = ["users/%u/#"]
everyone = true
""",
    )
    assert rules.for_client(ALICE, "a").publish("users/alice/x")
    assert not rules.for_client(ALICE, "a").publish("users/bob/x")
    assert not rules.for_client(ANONYMOUS, "a").publish("users//x")


def test_receive_cache_is_bounded(tmp_path: Path) -> None:
    rules = acl(tmp_path, RULES)
    ops = rules.for_client(ALICE, "console")
    for i in range(5000):
        assert ops.receive(f"plant/{i}")
    assert len(ops._receive_cache) <= 4096
    assert not ops.receive("secret/1")
