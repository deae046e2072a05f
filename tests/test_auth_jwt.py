"""JWT in the CONNECT password: keys (secret, PEM, JWKS), claims, and the refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from ingress.security.config import JwtAlgorithm, JwtConfig, SecurityConfigError
from ingress.security.identity import BAD_USERNAME_OR_PASSWORD, Credentials, Identity, Refused
from ingress.security.jwt_auth import JwtAuth
from tests.pki import CA, write_pem

SECRET = "a-shared-secret-of-at-least-32-bytes!"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "device-1", "exp": int(time.time()) + 600, **extra}


def hs256(payload: dict[str, Any], secret: str = SECRET, **headers: Any) -> bytes:
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers or None).encode()


def signed(payload: dict[str, Any], key: Any, alg: str, **headers: Any) -> bytes:
    return jwt.encode(payload, key, algorithm=alg, headers=headers or None).encode()


def login(auth: JwtAuth, token: bytes | None, username: str | None = None) -> Identity | None:
    return auth.authenticate(Credentials("client", username, token))


def refused(auth: JwtAuth, token: bytes, username: str | None = None) -> Refused:
    with pytest.raises(Refused) as err:
        login(auth, token, username)
    assert err.value.code == BAD_USERNAME_OR_PASSWORD
    return err.value


def secret_auth(**config: Any) -> JwtAuth:
    return JwtAuth(JwtConfig(secret=SecretStr(SECRET), **config))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# Claims ---------------------------------------------------------------------------------------


def test_hs256_token_names_the_user_and_groups() -> None:
    auth = secret_auth()
    identity = login(auth, hs256(claims(groups=["sensors", "site-1"])))
    assert identity == Identity("device-1", frozenset({"sensors", "site-1"}), "jwt")
    assert auth.name == "jwt"


@pytest.mark.parametrize(
    ("value", "groups"),
    [("sensors site-1", {"sensors", "site-1"}), ("", set()), ([], set()), (None, set())],
)
def test_groups_claim_forms(value: Any, groups: set[str]) -> None:
    payload = claims() if value is None else claims(roles=value)
    identity = login(secret_auth(groups_claim="roles"), hs256(payload))
    assert identity is not None and identity.groups == groups


@pytest.mark.parametrize("value", [["ok", 3], 7, {"a": 1}])
def test_groups_claim_of_another_type_is_a_bad_token(value: Any) -> None:
    assert refused(secret_auth(), hs256(claims(groups=value))).reason == "bad_token"


def test_username_claim_is_configurable_and_required() -> None:
    auth = secret_auth(username_claim="device_id")
    identity = login(auth, hs256(claims(device_id="pump-7")))
    assert identity is not None and identity.username == "pump-7"
    assert refused(auth, hs256(claims())).reason == "bad_token"
    assert refused(auth, hs256(claims(device_id=42))).reason == "bad_token"
    assert refused(auth, hs256(claims(device_id=""))).reason == "bad_token"


def test_connect_username_must_match_the_token() -> None:
    auth = secret_auth()
    token = hs256(claims())
    assert login(auth, token, "device-1") is not None
    assert login(auth, token, "") is not None  # an empty username is none
    err = refused(auth, token, "device-2")
    assert err.reason == "bad_credentials"


# Expiry, audience, issuer ---------------------------------------------------------------------


def test_expired_token_is_refused_as_expired() -> None:
    now = int(time.time())
    auth = secret_auth(leeway_seconds=30)
    assert refused(auth, hs256(claims(exp=now - 3600))).reason == "expired_token"
    assert login(auth, hs256(claims(exp=now - 5))) is not None  # within the leeway


def test_not_yet_valid_token_is_refused_as_expired() -> None:
    now = int(time.time())
    err = refused(secret_auth(leeway_seconds=0), hs256(claims(nbf=now + 3600)))
    assert err.reason == "expired_token"


def test_exp_is_required() -> None:
    err = refused(secret_auth(), hs256({"sub": "device-1"}))
    assert err.reason == "bad_token"
    assert "exp" in err.detail


def test_audience_and_issuer_are_checked_when_configured() -> None:
    auth = secret_auth(audience="bayou", issuer="https://id.example")
    good = claims(aud="bayou", iss="https://id.example")
    assert login(auth, hs256(good)) is not None
    assert login(auth, hs256({**good, "aud": ["other", "bayou"]})) is not None
    for bad in (
        {**good, "aud": "other"},
        {**good, "iss": "https://evil.example"},
        {k: v for k, v in good.items() if k != "aud"},
        {k: v for k, v in good.items() if k != "iss"},
    ):
        assert refused(auth, hs256(bad)).reason == "bad_token"


def test_audience_and_issuer_are_not_checked_when_not_configured() -> None:
    assert login(secret_auth(), hs256(claims(aud="anything", iss="anyone"))) is not None


# Not a JWT: the next method decides -----------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        None,
        b"",
        b"hunter2",
        b"a.b.c",
        b"has.two",
        b"a.b.c.d",
        "ünï.cödé.x".encode(),
        b"\xff.\xfe.x",
    ],
)
def test_a_password_that_is_not_a_jwt_passes(password: bytes | None) -> None:
    assert login(secret_auth(), password) is None


def test_jwt_shaped_garbage_signature_is_a_bad_token() -> None:
    token = hs256(claims())
    head, body, _ = token.split(b".")
    assert refused(secret_auth(), head + b"." + body + b".AAAA").reason == "bad_token"
    assert refused(secret_auth(), head + b"." + b"e30" + b"." + _).reason == "bad_token"


def test_token_signed_with_another_secret_is_a_bad_token() -> None:
    other = hs256(claims(), secret="another-secret-that-is-32-bytes-long")
    assert refused(secret_auth(), other).reason == "bad_token"


# Algorithms -----------------------------------------------------------------------------------


def test_alg_none_is_never_accepted() -> None:
    head = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims()).encode())
    err = refused(secret_auth(), f"{head}.{body}.".encode())
    assert err.reason == "bad_token"
    assert "'none'" in err.detail


def test_only_the_configured_algorithms(tmp_path: Path) -> None:
    key_file = tmp_path / "rsa.pem"
    key_file.write_bytes(public_pem(RSA_KEY))
    auth = JwtAuth(JwtConfig(secret=SecretStr(SECRET), public_key_file=key_file,
                             algorithms=["RS256"]))  # fmt: skip
    assert login(auth, signed(claims(), RSA_KEY, "RS256")) is not None
    assert refused(auth, hs256(claims())).reason == "bad_token"  # HS256 left out
    assert refused(auth, signed(claims(), RSA_KEY, "RS384")).reason == "bad_token"


def _hs256_with_key(key: bytes, payload: dict[str, Any]) -> bytes:
    """An HS256 token whose HMAC key is ``key``, made by hand (PyJWT refuses to)."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(payload).encode())
    mac = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}".encode()


@pytest.mark.parametrize("with_secret", [False, True])
def test_hs256_token_keyed_with_the_public_key_is_refused(
    tmp_path: Path, with_secret: bool
) -> None:
    """Algorithm confusion: the RSA public key is public, so an attacker can HMAC with it."""
    pem = public_pem(RSA_KEY)
    key_file = tmp_path / "rsa.pem"
    key_file.write_bytes(pem)
    secret = SecretStr(SECRET) if with_secret else None
    auth = JwtAuth(JwtConfig(secret=secret, public_key_file=key_file))
    forged = _hs256_with_key(pem, claims(sub="admin"))
    assert refused(auth, forged).reason == "bad_token"


# Keys: PEM and JWKS ---------------------------------------------------------------------------


def test_rs256_and_es256_with_pem_public_keys(tmp_path: Path) -> None:
    for key, alg in ((RSA_KEY, "RS256"), (EC_KEY, "ES256")):
        key_file = tmp_path / f"{alg}.pem"
        key_file.write_bytes(public_pem(key))
        auth = JwtAuth(JwtConfig(public_key_file=key_file))
        assert auth.algorithms == [alg]
        assert login(auth, signed(claims(), key, alg)) is not None
    auth = JwtAuth(JwtConfig(public_key_file=tmp_path / "RS256.pem"))
    assert refused(auth, signed(claims(), OTHER_RSA_KEY, "RS256")).reason == "bad_token"
    assert refused(auth, signed(claims(), EC_KEY, "ES256")).reason == "bad_token"


def test_pem_certificate_holds_the_public_key(tmp_path: Path) -> None:
    ca = CA.create("token issuer")
    cert_file = write_pem(tmp_path / "cert.pem", ca.cert, None)
    auth = JwtAuth(JwtConfig(public_key_file=cert_file))
    assert auth.algorithms == ["ES256"]
    assert login(auth, signed(claims(), ca.key, "ES256")) is not None


def jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str | None) -> dict[str, Any]:
    """The public JWK of ``key``."""
    if isinstance(key, rsa.RSAPrivateKey):
        text = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())
    else:
        text = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())
    data: dict[str, Any] = json.loads(text)
    if kid:
        data["kid"] = kid
    return data


def jwks_file(tmp_path: Path, *keys: dict[str, Any]) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": list(keys)}, indent=2))
    return path


def test_jwks_key_is_chosen_by_kid(tmp_path: Path) -> None:
    path = jwks_file(tmp_path, jwk(RSA_KEY, "r1"), jwk(OTHER_RSA_KEY, "r2"), jwk(EC_KEY, "e1"))
    auth = JwtAuth(JwtConfig(jwks_file=path))
    assert sorted(auth.algorithms) == ["ES256", "RS256"]
    assert login(auth, signed(claims(), RSA_KEY, "RS256", kid="r1")) is not None
    assert login(auth, signed(claims(), OTHER_RSA_KEY, "RS256", kid="r2")) is not None
    assert login(auth, signed(claims(), EC_KEY, "ES256", kid="e1")) is not None
    assert refused(auth, signed(claims(), RSA_KEY, "RS256", kid="r2")).reason == "bad_token"
    assert refused(auth, signed(claims(), RSA_KEY, "RS256", kid="r9")).reason == "bad_token"
    # Two RSA keys: a token without a kid does not say which.
    assert refused(auth, signed(claims(), RSA_KEY, "RS256")).reason == "bad_token"


def test_jwks_of_one_key_needs_no_kid(tmp_path: Path) -> None:
    auth = JwtAuth(JwtConfig(jwks_file=jwks_file(tmp_path, jwk(EC_KEY, None))))
    assert login(auth, signed(claims(), EC_KEY, "ES256")) is not None


def test_jwks_oct_keys_do_not_verify_hs256(tmp_path: Path) -> None:
    oct_key = {"kty": "oct", "kid": "s", "k": b64(SECRET.encode())}
    auth = JwtAuth(JwtConfig(jwks_file=jwks_file(tmp_path, oct_key, jwk(RSA_KEY, "r1"))))
    assert auth.algorithms == ["RS256"]
    assert refused(auth, hs256(claims(), kid="s")).reason == "bad_token"


# Unusable configuration -----------------------------------------------------------------------


def _private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a key", "not a PEM public key"),
        (_private_pem(EC_KEY), "holds a private key"),
        (public_pem(ec.generate_private_key(ec.SECP384R1())), "P-256"),
        (public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "2048"),
    ],
)
def test_unusable_public_key_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(content)
    with pytest.raises(SecurityConfigError) as err:
        JwtAuth(JwtConfig(public_key_file=path))
    assert f"BAYOU_AUTH_JWT_PUBLIC_KEY_FILE={path}" in str(err.value)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{\n  "keys": [\n    {"kty": "RSA",,}\n  ]\n}', ", line 3: not JSON"),
        ("[]", "expected a JWK Set"),
        ('{"keys": []}', "did not contain any keys"),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "no RS256 or ES256 public key"),
        (json.dumps({"keys": [json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY))]}),
         "holds private keys"),
    ],
)  # fmt: skip
def test_unusable_jwks_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(content)
    with pytest.raises(SecurityConfigError) as err:
        JwtAuth(JwtConfig(jwks_file=path))
    assert f"BAYOU_AUTH_JWT_JWKS_FILE={path}" in str(err.value)
    assert message in str(err.value)


def test_missing_key_files_name_their_setting(tmp_path: Path) -> None:
    with pytest.raises(SecurityConfigError, match=r"BAYOU_AUTH_JWT_PUBLIC_KEY_FILE=.*cannot read"):
        JwtAuth(JwtConfig(public_key_file=tmp_path / "absent.pem"))
    with pytest.raises(SecurityConfigError, match=r"BAYOU_AUTH_JWT_JWKS_FILE=.*cannot read"):
        JwtAuth(JwtConfig(jwks_file=tmp_path / "absent.json"))


def test_short_secret_is_refused() -> None:
    with pytest.raises(SecurityConfigError, match="BAYOU_AUTH_JWT_SECRET is 5 bytes"):
        JwtAuth(JwtConfig(secret=SecretStr("short")))


@pytest.mark.parametrize("algorithms", [["RS256", "ES256"], []])
def test_algorithms_without_keys_are_refused(algorithms: list[JwtAlgorithm]) -> None:
    with pytest.raises(SecurityConfigError, match=r"BAYOU_AUTH_JWT_ALGORITHMS=.*none of them"):
        JwtAuth(JwtConfig(secret=SecretStr(SECRET), algorithms=algorithms))


def test_keys_made_with_openssl_as_in_the_docs(tmp_path: Path) -> None:
    """The commands of docs/security.md: an ES256 issuer key pair, a device token."""
    key, pub = tmp_path / "issuer.key", tmp_path / "issuer.pub"
    for cmd in (
        ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)],
        ["openssl", "ec", "-in", str(key), "-pubout", "-out", str(pub)],
    ):
        subprocess.run(cmd, check=True, capture_output=True)
    auth = JwtAuth(JwtConfig(public_key_file=pub, audience="bayou"))
    token = jwt.encode(
        {"sub": "device-17", "groups": ["sensors"], "aud": "bayou",
         "exp": int(time.time()) + 86400},
        key.read_text(), algorithm="ES256",
    )  # fmt: skip
    identity = login(auth, token.encode(), "device-17")
    assert identity == Identity("device-17", frozenset({"sensors"}), "jwt")
