"""The node's gatekeeper: the authentication chain, the ACL and per-client limits, built once
from :class:`~ingress.security.config.SecurityConfig` and asked by every connection.

Every refusal is counted here, under a fixed label, so the connection only acts on the answer.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from ingress.metrics import ACL_DENIED_TOTAL, AUTH_FAILURES_TOTAL
from ingress.security.acl import Acl, ClientAcl
from ingress.security.certs import CertificateAuth
from ingress.security.config import AuthConfig, SecurityConfig
from ingress.security.identity import (
    FAILURE_REASONS,
    AuthChain,
    Authenticator,
    Credentials,
    Identity,
    Refused,
)
from ingress.security.jwt_auth import JwtAuth
from ingress.security.passwords import PasswordFileAuth

log = logging.getLogger(__name__)

ACL_ACTIONS = ("publish", "subscribe", "receive", "will")


def build_methods(auth: AuthConfig) -> list[Authenticator]:
    """The configured authentication methods in chain order (raises SecurityConfigError)."""
    methods: list[Authenticator] = []
    for name in auth.methods():
        if name == "certificate":
            methods.append(CertificateAuth(auth.cert_username))
        elif name == "password_file":
            assert auth.password_file is not None
            methods.append(PasswordFileAuth(auth.password_file, auth.password_cache_size))
        else:
            assert auth.jwt is not None
            methods.append(JwtAuth(auth.jwt))
    return methods


class Guard:
    """Answers "who is this" at CONNECT and "may it" for each publish, subscribe and delivery."""

    def __init__(self, config: SecurityConfig, chain: AuthChain, acl: Acl | None) -> None:
        self.config = config
        self.limits = config.limits
        self.chain = chain
        self.acl = acl
        # Password hashes are slow on purpose (argon2id: tens of ms, 64 MiB each): checked on
        # threads (argon2 releases the GIL), two at a time, which also caps their memory.
        self.executor: ThreadPoolExecutor | None = None
        if any(isinstance(m, PasswordFileAuth) for m in chain.methods):
            self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="bayou-auth")
        # Every label value exists from the start: a dashboard sees 0, not "no data".
        for reason in FAILURE_REASONS:
            AUTH_FAILURES_TOTAL.labels(reason)
        for action in ACL_ACTIONS:
            ACL_DENIED_TOTAL.labels(action)

    @classmethod
    def build(cls, config: SecurityConfig) -> Guard:
        """Load the password file, keys and ACL file (raises SecurityConfigError naming them)."""
        chain = AuthChain(build_methods(config.auth), config.auth.allow_anonymous)
        acl = Acl.load(config.acl_file) if config.acl_file is not None else None
        return cls(config, chain, acl)

    def authenticate(self, creds: Credentials) -> Identity:
        """The client's identity, or raise :class:`Refused` (counted by reason)."""
        try:
            return self.chain.authenticate(creds)
        except Refused as exc:
            AUTH_FAILURES_TOTAL.labels(exc.reason).inc()
            log.warning(
                "client %r (%s) refused: %s (%s)", creds.client_id, creds.peer, exc.reason,
                exc.detail,
            )  # fmt: skip
            raise

    def close(self) -> None:
        """Stop the hashing threads (the node is stopping)."""
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)

    def client_acl(self, identity: Identity, client_id: str) -> ClientAcl | None:
        """The ACL as it applies to one connection; None when no ACL file is configured."""
        return None if self.acl is None else self.acl.for_client(identity, client_id)


def denied(action: str) -> None:
    """Count one operation the ACL denied."""
    ACL_DENIED_TOTAL.labels(action).inc()
