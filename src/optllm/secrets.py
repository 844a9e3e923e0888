"""Keep API keys out of every message, log, ledger and output file.

Two layers, used by every path that prints or writes text that could hold a key:
- the key values optllm itself read from the environment (`remember`, called when the
  catalogue's key variables are read) are replaced wherever they appear (`redact_known`,
  applied to every ledger and answers line and every error message);
- text that looks like a credential in any common format (OpenAI/Anthropic `sk-…`, Google
  `AIza…`, GitHub `ghp_…`/`github_pat_…`, Slack `xox?-…`, Hugging Face `hf_…`, AWS `AKIA…`,
  JWTs, `Bearer …`, long hex or base64 strings, `?key=`/`token=` URL parameters, a password in
  a URL) is replaced in messages (`redact`): error lines, server error messages, failure
  reasons. Answers keep their text (a model's answer may legitimately hold a long hex id),
  apart from the known key values.
"""
from __future__ import annotations

import re
import threading

REDACTED = "[redacted]"

_PREFIXED = (
    r"sk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_\-]{16,}",
    r"sk_(?:live|test)_[A-Za-z0-9]{16,}",
    r"[rp]k_(?:live|test)_[A-Za-z0-9]{16,}",
    r"AIza[0-9A-Za-z_\-]{30,}",
    r"gh[pousr]_[A-Za-z0-9]{30,}",
    r"github_pat_[A-Za-z0-9_]{40,}",
    r"xox[abposr]-[A-Za-z0-9\-]{10,}",
    r"hf_[A-Za-z0-9]{30,}",
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",
    r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
    r"gsk_[A-Za-z0-9]{30,}",
    r"r8_[A-Za-z0-9]{30,}",
)
_PATTERNS = [
    re.compile(r"(?<![A-Za-z0-9_\-])(?:" + "|".join(_PREFIXED) + r")"),
    # Authorization headers and key-like URL parameters: keep the name, hide the value
    re.compile(r"(?i)(\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=\-]{8,}"),
    re.compile(r"(?i)([?&;](?:api[_-]?key|key|token|access[_-]?token|auth|signature|sig|secret)=)[^&\s\"'#]+"),
    re.compile(r"(?i)(\b(?:api[_-]?key|secret|password|token)\b[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]{8,}"),
    re.compile(r"(?i)(https?://[^\s/:@]+:)[^\s/@]+(?=@)"),
    # bare long hex (32+) or base64-ish (32+ with letters and digits) strings
    re.compile(r"(?<![A-Za-z0-9])[0-9a-fA-F]{32,}(?![A-Za-z0-9])"),
    re.compile(r"(?<![A-Za-z0-9+/_\-])(?=[A-Za-z0-9+/_\-]*[0-9])(?=[A-Za-z0-9+/_\-]*[a-z])(?=[A-Za-z0-9+/_\-]*[A-Z])"
               r"[A-Za-z0-9+/_\-]{32,}={0,2}(?![A-Za-z0-9+/_\-])"),
]

_known: set[str] = set()
_lock = threading.Lock()


def looks_like_secret(text: str) -> bool:
    """True when `text` (a whole value, e.g. what was given as a variable NAME) looks like a
    credential rather than a name: a known key format, 32+ hex digits, or 20+ characters that
    mix lower case, upper case or digits without the underscores of a variable name."""
    s = text.strip()
    if not s:
        return False
    if any(p.search(s) for p in _PATTERNS):
        return True
    if len(s) >= 20 and re.fullmatch(r"[A-Za-z0-9+/=\-.]+", s):
        kinds = sum(bool(re.search(c, s)) for c in (r"[a-z]", r"[A-Z]", r"[0-9]"))
        return kinds >= 2 and "_" not in s
    return False


def remember(value: str | None) -> None:
    """Register a key value read from the environment, so it is hidden wherever it appears."""
    if value and len(value) >= 6 and value != "not-needed":
        with _lock:
            _known.add(value)


def redact_known(text: str) -> str:
    """`text` with every remembered key value replaced (cheap when nothing matches)."""
    if not _known or not text:
        return text
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for v in known:
        if v in text:
            text = text.replace(v, REDACTED)
    return text


def redact(text: str) -> str:
    """`text` with remembered keys and anything that looks like a credential replaced."""
    if not text:
        return text
    text = redact_known(text)
    for p in _PATTERNS:
        text = p.sub(lambda m: (m.group(1) if m.groups() and m.group(1) else "") + REDACTED, text)
    return text
