"""Secrets never reach reports or transcripts: tokens (JWTs, bearer/basic credentials, `token` fields and
`?token=`), passwords and other secret-named values (JSON, TOML, YAML, env lines), /etc/shadow hashes, AWS access
key ids and secret keys (also bare), and PEM private keys (also when cut short) are replaced before anything is
written."""

from __future__ import annotations

import re
from typing import Any

MARK = "[redacted]"
_SECRET_NAMES = (r"(?:[a-z0-9_]*token|password|passwd|secret|secret_?access_?key|session_?token|api_?key|"
                 r"private_?key|client_?secret)")
_PATTERNS = [
    # a private key, whole or cut short (a truncated output keeps no part of its body)
    (re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)", re.DOTALL),
     "-----BEGIN PRIVATE KEY-----" + MARK + "-----END PRIVATE KEY-----"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+"), MARK),  # JWT
    (re.compile(r"(?i)(authorization:\s*(?:bearer|basic|token|digest)\s+)\S+"), r"\1" + MARK),
    (re.compile(r"(?i)(\"(?:token|spacetimedb_token|web_session_token|secret_?access_?key|SecretAccessKey|"
                r"SessionToken|password|passwd|secret|api_?key|client_?secret)\"\s*:\s*\")[^\"]+"), r"\1" + MARK),
    (re.compile(r"(?i)\b((?:spacetimedb_token|web_session_token|aws_secret_access_key|aws_session_token)\s*=\s*"
                r"[\"']?)[^\"'\s]+"), r"\1" + MARK),
    (re.compile(r"([?&]token=)[^&\s\"']+"), r"\1" + MARK),
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), MARK),
    # `name = "value"` / `name: value` / NAME=value for a secret-looking name (TOML, YAML, env files)
    # (the name ends with the secret word: `tokens_issued: 3` is not a secret; a value under 6 characters neither)
    (re.compile(r"(?im)^(\s*(?:export\s+)?[\w.-]*" + _SECRET_NAMES + r"[\"']?\s*[=:]\s*[\"']?)"
                r"(?!\[redacted\]|eyJyZWRhY3RlZCI6MX0)([^\"'\s]{6,})"), r"\1" + MARK),
    # a password hash of /etc/shadow (user:$id$salt$hash:...)
    (re.compile(r"(?m)^([a-z_][a-z0-9_-]*:)\$[0-9a-z]+\$[^:\s]+(?=:)"), r"\1" + MARK),
    # a bare AWS secret access key: 40 base64 characters with upper, lower case and a digit, standing alone
    (re.compile(r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+]*[A-Z])(?=[A-Za-z0-9/+]*[a-z])(?=[A-Za-z0-9/+]*[0-9])"
                r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"), MARK),
]


SECRET_KEYS = frozenset({"token", "secret_access_key", "private_key", "password", "passwd", "secret", "api_key",
                         "client_secret", "session_token"})


def redact_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(value: Any) -> Any:
    """A copy of `value` (str, dict, list, nested) with every secret replaced."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: (MARK if isinstance(k, str) and k.lower() in SECRET_KEYS and isinstance(v, str) and v
                    else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


# A JWT whose three parts say "redacted": what a tape keeps of a token, so that a check judging the token's shape
# (three dot-separated parts) judges a replayed answer as it judged the live one. It matches the JWT pattern
# above, so redacting it again changes nothing.
SHAPED_JWT = "eyJyZWRhY3RlZCI6MX0.eyJyZWRhY3RlZCI6MX0.cmVkYWN0ZWQ"
_SHAPED_PATTERNS = [
    _PATTERNS[0],
    (_PATTERNS[1][0], SHAPED_JWT),
    (re.compile(r"(?i)(authorization:\s*bearer\s+)(?!" + SHAPED_JWT + r")\S+"), r"\1" + MARK),
    (re.compile(r"(?i)(\"(?:token|spacetimedb_token|web_session_token|secret_?access_?key|SecretAccessKey|"
                r"SessionToken)\"\s*:\s*\")(?!" + SHAPED_JWT + r")[^\"]+"), r"\1" + MARK),
    (re.compile(r"(?i)\b((?:spacetimedb_token|web_session_token|aws_secret_access_key|aws_session_token)\s*=\s*"
                r"[\"']?)(?!" + SHAPED_JWT + r")[^\"'\s]+"), r"\1" + MARK),
    (re.compile(r"([?&]token=)(?!" + SHAPED_JWT + r")[^&\s\"']+"), r"\1" + MARK),
    _PATTERNS[6],
    *_PATTERNS[7:],
]


def redact_keeping_shape(text: str) -> str:
    """`redact_text` for recordings a run is judged again from (harness.tape): the same secrets go, but a JWT
    becomes SHAPED_JWT instead of a bare mark. Idempotent."""
    for pattern, replacement in _SHAPED_PATTERNS:
        text = pattern.sub(replacement, text)
    return text
