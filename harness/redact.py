"""Secrets never reach reports or transcripts: tokens (JWTs, bearer tokens, `token` fields and `?token=`),
AWS access key ids and secret keys, and PEM private keys are replaced before anything is written."""

from __future__ import annotations

import re
from typing import Any

MARK = "[redacted]"
_PATTERNS = [
    (re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.DOTALL),
     "-----BEGIN PRIVATE KEY-----" + MARK + "-----END PRIVATE KEY-----"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+"), MARK),  # JWT
    (re.compile(r"(?i)(authorization:\s*bearer\s+)\S+"), r"\1" + MARK),
    (re.compile(r"(?i)(\"(?:token|spacetimedb_token|web_session_token|secret_?access_?key|SecretAccessKey|"
                r"SessionToken)\"\s*:\s*\")[^\"]+"), r"\1" + MARK),
    (re.compile(r"(?i)\b((?:spacetimedb_token|web_session_token|aws_secret_access_key|aws_session_token)\s*=\s*"
                r"[\"']?)[^\"'\s]+"), r"\1" + MARK),
    (re.compile(r"([?&]token=)[^&\s\"']+"), r"\1" + MARK),
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), MARK),
]


def redact_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(value: Any) -> Any:
    """A copy of `value` (str, dict, list, nested) with every secret replaced."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: (MARK if isinstance(k, str) and k.lower() in ("token", "secret_access_key", "private_key")
                    and isinstance(v, str) and v else redact(v)) for k, v in value.items()}
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
]


def redact_keeping_shape(text: str) -> str:
    """`redact_text` for recordings a run is judged again from (harness.tape): the same secrets go, but a JWT
    becomes SHAPED_JWT instead of a bare mark. Idempotent."""
    for pattern, replacement in _SHAPED_PATTERNS:
        text = pattern.sub(replacement, text)
    return text
