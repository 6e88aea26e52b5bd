"""PostgreSQL URLs as mpqueue shows them: never with a password.

A URL can carry a secret in its userinfo (``user:secret@``) and in its query
(``?password=...``, ``?sslpassword=...``), under any percent-encoding. So the shown form
is rebuilt from the parameters libpq parsed, leaving the secret parameters out: no
spelling of the URL can slip one through. A URL libpq cannot parse is shown as
``postgresql://<unparsable>``.

libpq's parse errors quote the offending token or the whole URL. Such a message is shown
only when none of the places that could hold a secret (found by splitting the URL as
libpq's ``conninfo_uri_parse_options`` does) occurs in it; otherwise it is withheld.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote, unquote, urlencode

from ...errors import ConfigError

SECRET_PARAMS = frozenset({"password", "sslpassword"})
UNPARSABLE = "postgresql://<unparsable>"
_WITHHELD = (
    "libpq cannot parse it, and its message is not shown because it quotes "
    "the password; percent-encode reserved characters (such as @ : / ? & = % "
    "[ ]) in the user name and password"
)


def parse(url: str) -> dict[str, str]:
    """libpq's connection parameters for ``url``.

    Raises ConfigError naming the problem (never quoting a secret; not chained to
    libpq's error, whose text may quote one), or when psycopg is not installed.
    """
    try:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise ConfigError(
            "PostgreSQL stores need psycopg: pip install 'mpqueue[postgres]'"
        ) from None
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        problem = _without_secrets(str(exc).strip(), url)
        raise ConfigError(f"invalid PostgreSQL URL {UNPARSABLE}: {problem}") from None
    return {key: str(value) for key, value in params.items() if value is not None}


def display(url: str) -> str:
    """``url`` fit for logs and messages: rebuilt without its secrets; never raises."""
    try:
        return shown(parse(url))
    except ConfigError:
        return UNPARSABLE


def shown(params: dict[str, str]) -> str:
    """A ``postgresql://`` URL for ``params`` without the secret ones."""
    rest = {key: value for key, value in params.items() if key not in SECRET_PARAMS}
    user, dbname = rest.pop("user", ""), rest.pop("dbname", "")
    host, port = rest.get("host", ""), rest.get("port", "")
    netloc = ""
    if "," not in host + port:  # several hosts stay in the query, as host=a,b&port=1,2
        rest.pop("host", None)
        rest.pop("port", None)
        netloc = f"[{host}]" if ":" in host else quote(host, safe="")
        netloc += f":{quote(port, safe='')}" if port else ""
    userinfo = f"{quote(user, safe='')}@" if user else ""
    query = urlencode(rest, quote_via=quote)
    return f"postgresql://{userinfo}{netloc}/{quote(dbname, safe='')}" + (
        f"?{query}" if query else ""
    )


def secrets_of(params: dict[str, str]) -> list[str]:
    """The secret values among ``params`` (to keep out of any text that is shown)."""
    return [params[key] for key in sorted(SECRET_PARAMS) if params.get(key)]


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with each of ``secrets`` replaced by ``***``."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _without_secrets(message: str, url: str) -> str:
    message = message.replace(url, UNPARSABLE)
    if any(spelling in message for spelling in _secret_spellings(url)):
        return _WITHHELD
    return message


def _secret_spellings(url: str) -> Iterator[str]:
    """Every substring of ``url`` (raw and decoded) libpq could take as a secret.

    libpq's split: the userinfo ends at the first ``@`` before any ``/``, and its
    password starts after the userinfo's first ``:``; the query starts at the first
    ``?`` after the userinfo, its pairs split at ``&``, keys from values at ``=``.
    A query key that is not plainly a harmless one counts as secret-bearing.
    """
    rest = url.split("://", 1)[-1]
    at, slash = rest.find("@"), rest.find("/")
    if at >= 0 and (slash < 0 or at < slash):
        userinfo, rest = rest[:at], rest[at + 1 :]
        if ":" in userinfo:
            yield from _spellings(userinfo.split(":", 1)[1])
    for pair in rest.partition("?")[2].split("&"):
        key, _, value = pair.partition("=")
        if unquote(key).lower() in SECRET_PARAMS or "%" in key:
            yield from _spellings(value)


def _spellings(raw: str) -> Iterator[str]:
    if raw:
        yield raw
        yield unquote(raw)
