"""Who may connect, what they may do, and how much: authentication, ACLs and limits.

- :mod:`ingress.security.config` — the plain-data configuration of all three;
- :mod:`ingress.security.identity` — credentials in, an identity (or a refusal) out, and the
  chain of authentication methods;
- :mod:`ingress.security.passwords`, :mod:`ingress.security.jwt_auth`,
  :mod:`ingress.security.certs` — the methods;
- :mod:`ingress.security.acl` — the ACL file and its first-match evaluation;
- :mod:`ingress.security.limits` — token buckets and per-source connection rates.
"""
