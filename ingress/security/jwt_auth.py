"""A JSON Web Token as the CONNECT password, verified with PyJWT.

The keys are an HS256 shared secret (``BAYOU_AUTH_JWT_SECRET``), a PEM public key or
certificate (``BAYOU_AUTH_JWT_PUBLIC_KEY_FILE``, RS256 or ES256), and a JWKS file
(``BAYOU_AUTH_JWT_JWKS_FILE``, keys chosen by the token's ``kid``). Each algorithm has its own
keys, picked here before PyJWT sees the token, so a token can never choose how its own
signature is checked (no ``none``, no HS256 "signed" with a public key).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ingress.security.config import JwtAlgorithm, JwtConfig, SecurityConfigError
from ingress.security.identity import (
    BAD_USERNAME_OR_PASSWORD,
    Credentials,
    FailureReason,
    Identity,
    Refused,
)

log = logging.getLogger(__name__)

SECRET_SETTING = "BAYOU_AUTH_JWT_SECRET"
PUBLIC_KEY_SETTING = "BAYOU_AUTH_JWT_PUBLIC_KEY_FILE"
JWKS_SETTING = "BAYOU_AUTH_JWT_JWKS_FILE"
ALGORITHMS_SETTING = "BAYOU_AUTH_JWT_ALGORITHMS"
# RFC 7518 §3.2: an HS256 key at least as long as the hash (256 bits).
MIN_SECRET_BYTES = 32
MIN_RSA_BITS = 2048
# Compact JWS: header.payload.signature, each base64url without padding (RFC 7515 §7.1).
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class JwtAuth:
    """The CONNECT password as a JWT: the username and groups come from its claims."""

    name = "jwt"

    def __init__(self, config: JwtConfig) -> None:
        self.config = config
        self._secret: bytes | None = None
        if config.secret is not None:
            self._secret = config.secret.get_secret_value().encode()
            if len(self._secret) < MIN_SECRET_BYTES:
                raise SecurityConfigError(
                    f"{SECRET_SETTING} is {len(self._secret)} bytes; an HS256 secret needs at "
                    f"least {MIN_SECRET_BYTES} (e.g. `openssl rand -base64 48`)"
                )
        self._pem: tuple[JwtAlgorithm, PublicKey] | None = None
        if config.public_key_file is not None:
            self._pem = _load_pem(config.public_key_file)
        self._jwks: list[jwt.PyJWK] = []
        if config.jwks_file is not None:
            self._jwks = _load_jwks(config.jwks_file)
        usable: set[str] = set()
        if self._secret is not None:
            usable.add("HS256")
        if self._pem is not None:
            usable.add(self._pem[0])
        usable.update(k.algorithm_name for k in self._jwks)
        self.algorithms: list[JwtAlgorithm] = [a for a in config.algorithms if a in usable]
        if not self.algorithms:
            raise SecurityConfigError(
                f"{ALGORITHMS_SETTING}={','.join(config.algorithms)}: none of them has a key "
                f"(the configured keys verify {', '.join(sorted(usable)) or 'nothing'}); set "
                f"{SECRET_SETTING} for HS256, {PUBLIC_KEY_SETTING} or {JWKS_SETTING} for "
                "RS256/ES256"
            )
        unused = usable - set(self.algorithms)
        if unused:
            log.warning("JWT keys for %s are configured but %s leaves them out",
                        ", ".join(sorted(unused)), ALGORITHMS_SETTING)  # fmt: skip

    def authenticate(self, creds: Credentials) -> Identity | None:
        """The identity the token's claims name; None when the password is not a JWT."""
        token = _as_token(creds.password)
        if token is None:
            return None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None  # three dotted segments, but no JWT header: some other password
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise _bad("bad_token", f"algorithm {alg!r} is not accepted ({ALGORITHMS_SETTING})")
        key = self._key_for(alg, header.get("kid"))
        claims = self._verify(token, alg, key)
        username = claims.get(self.config.username_claim)
        if not isinstance(username, str) or not username or "\x00" in username:
            raise _bad("bad_token", f"no usable {self.config.username_claim!r} claim")
        # An empty MQTT username counts as none: 3.1.1 needs one to send a password at all.
        if creds.username and creds.username != username:
            raise _bad(
                "bad_credentials",
                f"CONNECT username {creds.username!r} is not the token's {username!r}",
            )
        return Identity(username, self._groups(claims), self.name)

    def _key_for(self, alg: str, kid: Any) -> jwt.PyJWK | PublicKey | bytes:
        if alg == "HS256":
            assert self._secret is not None  # HS256 is in self.algorithms only with a secret
            return self._secret
        candidates = [k for k in self._jwks if k.algorithm_name == alg]
        if kid is not None:
            for k in candidates:
                if k.key_id == kid:
                    return k
        elif len(candidates) == 1:
            return candidates[0]  # a JWKS of one key needs no kid
        if self._pem is not None and self._pem[0] == alg:
            return self._pem[1]
        raise _bad("bad_token", f"no {alg} key for kid {kid!r} ({JWKS_SETTING})")

    def _verify(self, token: str, alg: str, key: jwt.PyJWK | PublicKey | bytes) -> dict[str, Any]:
        cfg = self.config
        require = ["exp"]
        if cfg.audience is not None:
            require.append("aud")
        if cfg.issuer is not None:
            require.append("iss")
        try:
            return jwt.decode(
                token, key, algorithms=[alg], audience=cfg.audience, issuer=cfg.issuer,
                leeway=cfg.leeway_seconds,
                options={"require": require, "verify_aud": cfg.audience is not None,
                         "enforce_minimum_key_length": True},
            )  # fmt: skip
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError) as exc:
            raise _bad("expired_token", f"token {exc}") from None
        except jwt.PyJWTError as exc:
            raise _bad("bad_token", f"token refused: {exc}") from None

    def _groups(self, claims: dict[str, Any]) -> frozenset[str]:
        value = claims.get(self.config.groups_claim)
        if value is None:
            return frozenset()
        if isinstance(value, str):
            return frozenset(value.split())
        if isinstance(value, list) and all(isinstance(g, str) for g in value):
            return frozenset(g for g in value if g)
        raise _bad(
            "bad_token", f"claim {self.config.groups_claim!r} is neither strings nor a string"
        )


def _as_token(password: bytes | None) -> str | None:
    if not password:
        return None
    try:
        text = password.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if _JWT_SHAPE.fullmatch(text) else None


def _bad(reason: FailureReason, detail: str) -> Refused:
    return Refused(reason, f"JWT: {detail}", BAD_USERNAME_OR_PASSWORD)


def _read(setting: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"{setting}={path}: cannot read it: {exc.strerror}") from None


def _load_pem(path: Path) -> tuple[JwtAlgorithm, PublicKey]:
    """The public key of a PEM public key or certificate, and the algorithm it verifies."""
    where = f"{PUBLIC_KEY_SETTING}={path}"
    data = _read(PUBLIC_KEY_SETTING, path)
    if b"PRIVATE KEY-----" in data:
        raise SecurityConfigError(
            f"{where}: holds a private key; give the node only the public key "
            "(`openssl pkey -in key.pem -pubout`)"
        )
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = load_pem_public_key(data)
    except ValueError:
        raise SecurityConfigError(f"{where}: not a PEM public key or certificate") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise SecurityConfigError(f"{where}: an RSA key of {key.key_size} bits; use 2048+")
        return "RS256", key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise SecurityConfigError(
                f"{where}: an EC key on {key.curve.name}; ES256 needs P-256 (secp256r1)"
            )
        return "ES256", key
    raise SecurityConfigError(f"{where}: a {type(key).__name__}; use an RSA or P-256 EC key")


def _load_jwks(path: Path) -> list[jwt.PyJWK]:
    """The RS256 and ES256 keys of a JWKS file (``{"keys": [...]}``, RFC 7517 §5)."""
    where = f"{JWKS_SETTING}={path}"
    try:
        doc = json.loads(_read(JWKS_SETTING, path))
    except json.JSONDecodeError as exc:
        raise SecurityConfigError(f"{where}, line {exc.lineno}: not JSON: {exc.msg}") from None
    except UnicodeDecodeError:
        raise SecurityConfigError(f"{where}: not UTF-8 JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise SecurityConfigError(f'{where}: expected a JWK Set, {{"keys": [...]}}')
    try:
        keys = list(jwt.PyJWKSet.from_dict(doc))
    except jwt.PyJWTError as exc:
        raise SecurityConfigError(f"{where}: {exc}") from None
    if any(isinstance(k.key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) for k in keys):
        raise SecurityConfigError(
            f"{where}: holds private keys; publish only the public part of each key"
        )
    # Symmetric ("oct") keys would let HS256 tokens in by the JWKS; that is the secret's job.
    usable = [k for k in keys if k.key_type in ("RSA", "EC") and k.algorithm_name in
              ("RS256", "ES256")]  # fmt: skip
    if len(usable) < len(doc["keys"]):
        log.warning("%s: %d of its %d keys are not RS256/ES256 public keys; ignored", where,
                    len(doc["keys"]) - len(usable), len(doc["keys"]))  # fmt: skip
    if not usable:
        raise SecurityConfigError(f"{where}: no RS256 or ES256 public key in it")
    return usable
