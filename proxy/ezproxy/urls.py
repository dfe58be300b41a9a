"""The argument syntaxes of EZproxy directives, turned into this proxy's terms.

Pure functions: a host or URL line into origins, a Domain line into a domain, the ``^`` templates
of URLs and Replace lines, and AnonymousURL's wildcard URLs into path globs. Anything they
cannot turn into something exactly as narrow as EZproxy's meaning comes back as a problem
string: an import fails closed (a host is left out, a path keeps needing sign-in), never open.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from proxy.vendors import DEFAULT_PORTS, Origin, normalise_host, parse_absolute_url, valid_host

# EZproxy URL templates that put something about the patron into a vendor URL.
PERSONAL_TEMPLATES = {"u": "the patron's user name", "b": "a per-patron token"}
_TEMPLATE = re.compile(r"\^(.)", re.S)
_HOST_MARKER = re.compile(r"\^[PpSs]([^\^\s]*)\^")
_PLACEHOLDER = re.compile(r"x{3,}|your|\{|\}|\[|\]|<|>", re.IGNORECASE)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://", re.S)


def templates_in(text: str) -> list[str]:
    """The ``^x`` template letters in a URL (``^B`` -> "b"), lower-cased, in order."""
    return [m.group(1).lower() for m in _TEMPLATE.finditer(text)]


def strip_template(url: str) -> str:
    """The URL without its ``^`` templates: a query parameter holding one is dropped whole
    (``a.asp?lib=1&u=^U`` -> ``a.asp?lib=1``); a template elsewhere cuts the URL there."""
    if "^" not in url:
        return url
    base, question, query = url.partition("?")
    if "^" in base:
        return base.split("^", 1)[0]
    kept = [part for part in query.split("&") if "^" not in part and part]
    return base + (question + "&".join(kept) if kept else "")


def looks_like_placeholder(text: str) -> bool:
    """True for values OCLC's stanzas ask the library to fill in (XXXX, {yourlibrary}, [site])."""
    return bool(_PLACEHOLDER.search(text))


def origins_of(spec: str) -> tuple[tuple[Origin, ...], str]:
    """Origins for a URL or Host argument: ``https://h[:p][/path]`` is one origin; a bare
    ``h[:p][/path]`` is http and https (EZproxy stanzas list both anyway), except that port 443
    means https and port 80 http. Any path is dropped: hosts are the unit. ``((), problem)``
    when it is not a plain host."""
    spec = strip_template(spec.strip())
    match = _SCHEME.match(spec)
    if match:
        scheme = match.group(1).lower()
        if scheme not in DEFAULT_PORTS:
            return (), f"{spec!r} is not an http:// or https:// address"
        authority = re.split(r"[/?#]", spec[match.end():], maxsplit=1)[0]
        parsed = parse_absolute_url(f"{scheme}://{authority}/")
        if parsed is None:
            return (), f"{authority!r} is not a host name or host:port"
        return (parsed.origin,), ""
    authority = re.split(r"[/?#]", spec, maxsplit=1)[0]
    host_text, sep, port_text = authority.rpartition(":")
    if not sep:
        host_text, port_text = port_text, ""
    host = normalise_host(host_text) if host_text and "%" not in host_text and "@" not in host_text else None
    if host is None:
        return (), f"{authority!r} is not a host name or host:port"
    if port_text and (not port_text.isdigit() or not 0 < int(port_text) < 65536):
        return (), f"{authority!r} has no valid port"
    if not port_text:
        return (Origin("https", host, 443), Origin("http", host, 80)), ""
    port = int(port_text)
    if port == 443:
        return (Origin("https", host, 443),), ""
    if port == 80:
        return (Origin("http", host, 80),), ""
    return (Origin("https", host, port), Origin("http", host, port)), ""


def domain_of(spec: str) -> tuple[str, str]:
    """The domain of a Domain line (a leading ``.``, ``*.``, scheme, port or path is dropped);
    ``("", problem)`` when it is not a domain of at least two labels."""
    text = spec.strip()
    match = _SCHEME.match(text)
    if match:
        text = text[match.end():]
    text = re.split(r"[/?#:]", text, maxsplit=1)[0].lstrip("*").lstrip(".")
    host = normalise_host(text) if text else None
    if host is None or not valid_host(host):
        return "", f"{spec.strip()!r} is not a domain name"
    if "." not in host:
        # SECURITY: a one-label domain ("com") would make every site in a TLD a vendor host.
        return "", f"{host!r} is a top-level domain: the proxy only accepts domains of two labels or more"
    return host, ""


def emit_hosts(origins: list[Origin]) -> list[str]:
    """Vendor ``hosts`` entries for a list of origins, in first-seen order, as short as the
    schema allows: a bare ``host`` for http+https on default ports, ``host:port`` for both
    schemes on one port, ``scheme://host[:port]`` otherwise."""
    present = set(origins)
    out: list[str] = []
    done: set[Origin] = set()
    for origin in origins:
        if origin in done:
            continue
        if origin.default_port:
            pair = {Origin("https", origin.host, 443), Origin("http", origin.host, 80)}
            spec = origin.host
        else:
            pair = {Origin("https", origin.host, origin.port), Origin("http", origin.host, origin.port)}
            spec = f"{origin.host}:{origin.port}"
        if pair <= present:
            out.append(spec)
            done |= pair
        else:
            out.append(origin.url)
            done.add(origin)
    return out


@dataclass(frozen=True, slots=True)
class ReplaceText:
    text: str
    host_markers: tuple[str, ...]  # hosts named by ^P...^ / ^S...^
    unsupported: tuple[str, ...]  # other markers (^A, ^H, ^D, ^L ...), which we cannot express


def translate_replace(text: str) -> ReplaceText:
    """A Replace argument in this proxy's terms. ``^Phost^``/``^Shost^`` ask for the proxied form
    of a vendor host: our rules run before host rewriting, so the plain host is written and the
    rewriter maps it. Markers naming the proxy itself (^H, ^D, ^L) or suppressing rewriting
    (^A) have no equivalent."""
    hosts: list[str] = []

    def host(match: re.Match[str]) -> str:
        hosts.append(match.group(1))
        return match.group(1)

    plain = _HOST_MARKER.sub(host, text)
    others = tuple(f"^{letter}" for letter in (m.group(1) for m in _TEMPLATE.finditer(plain)))
    return ReplaceText(plain, tuple(hosts), others)


@dataclass(frozen=True, slots=True)
class AnonPattern:
    host_glob: str | None  # None: the pattern names no host (it applies to every host)
    path_glob: str  # for [[vendor]] anonymous_paths


def anonymous_pattern(wildurl: str) -> tuple[AnonPattern | None, str]:
    """An AnonymousURL wildcard URL as a host glob and a path glob, or ``(None, problem)``.

    EZproxy compares the pattern with the whole URL. ``*.woff*`` (no host) becomes the path glob
    ``/*.woff*`` for every host; ``https://api.v.com/open/*`` becomes host ``api.v.com`` and path
    ``/open/*``. A query in the pattern makes EZproxy's rule narrower than a path glob can be,
    so such patterns are refused.
    """
    match = _SCHEME.match(wildurl)
    if match is None and wildurl.startswith("*"):
        host_glob: str | None = None
        path = "/" + wildurl
    elif match is not None:
        rest = wildurl[match.end():]
        cut = re.search(r"[/?]", rest)
        host_part, path = (rest[: cut.start()], rest[cut.start():]) if cut else (rest, "")
        host_glob = host_part.lower().split(":", 1)[0] or None
        if host_glob is None:
            return None, "names no host"
        if not path:
            path = "/*" if host_part.endswith("*") else "/"
    else:
        return None, "is compared with whole URLs (https://...) and this one can never match one"
    path, question, query = path.partition("?")
    if question and query.strip("*"):
        return None, "limits a query string, which anonymous paths cannot express"
    if question:
        path += "*"
    if not path.startswith("/"):
        path = "/" + path
    # fnmatch reads "[" as a character class; an EZproxy wildcard URL only knows "*".
    return AnonPattern(host_glob, path.replace("[", "[[]")), ""


def host_glob_matches(glob: str, host: str) -> bool:
    return fnmatch.fnmatchcase(host, glob)
