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

from proxy.network import is_ip_literal
from proxy.vendors import DEFAULT_PORTS, Origin, normalise_host, parse_absolute_url, valid_host

# EZproxy URL templates that put something about the patron into a vendor URL.
PERSONAL_TEMPLATES = {"u": "the patron's user name", "b": "a per-patron token"}
_TEMPLATE = re.compile(r"\^(.)", re.S)
_HOST_MARKER = re.compile(r"\^[PpSs]([^\^\s]*)\^")
_PLACEHOLDER = re.compile(r"x{3,}|your|\{|\}|\[|\]|<|>", re.IGNORECASE)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://", re.S)

# SECURITY: common multi-label public suffixes, refused as Domain lines like a top-level domain
# (``D co.uk`` would make every British company a vendor host and send the membership assertion
# to each). A short built-in list, not the whole Public Suffix List: the second-level suffixes
# under which libraries' vendors and registrants commonly sit. No network access.
PUBLIC_SUFFIXES = frozenset({
    # United Kingdom
    "co.uk", "ac.uk", "gov.uk", "org.uk", "ltd.uk", "plc.uk", "me.uk", "net.uk", "nhs.uk", "sch.uk", "police.uk",
    # Australia, New Zealand
    "com.au", "edu.au", "gov.au", "org.au", "net.au", "asn.au", "id.au",
    "co.nz", "ac.nz", "govt.nz", "org.nz", "net.nz", "school.nz",
    # Japan, Korea, China, Hong Kong, Taiwan, Singapore, India
    "co.jp", "ac.jp", "go.jp", "or.jp", "ne.jp", "ed.jp", "lg.jp",
    "co.kr", "ac.kr", "go.kr", "or.kr", "re.kr",
    "com.cn", "edu.cn", "gov.cn", "org.cn", "net.cn", "ac.cn",
    "com.hk", "edu.hk", "gov.hk", "org.hk", "com.tw", "edu.tw", "gov.tw", "org.tw",
    "com.sg", "edu.sg", "gov.sg", "org.sg", "co.in", "ac.in", "gov.in", "org.in", "res.in", "edu.in",
    # Americas
    "com.br", "edu.br", "gov.br", "org.br", "net.br", "com.mx", "edu.mx", "gob.mx", "org.mx",
    "com.ar", "edu.ar", "gob.ar", "org.ar", "gc.ca", "qc.ca", "on.ca",
    # Africa, Middle East, Europe
    "co.za", "ac.za", "gov.za", "org.za", "co.il", "ac.il", "gov.il", "org.il",
    "com.tr", "edu.tr", "gov.tr", "org.tr", "com.pl", "edu.pl", "gov.pl", "com.ua", "edu.ua",
    "ac.at", "co.at", "gv.at", "or.at", "com.es", "edu.es", "gob.es", "org.es",
    # United States (k12 and state governments)
    "k12.ca.us", "k12.ct.us", "k12.ny.us", "k12.tx.us", "lib.ct.us", "lib.ca.us", "lib.ny.us",
    # Shared hosting where every sub-domain belongs to someone else
    "github.io", "blogspot.com", "herokuapp.com", "azurewebsites.net", "cloudfront.net", "s3.amazonaws.com",
    "appspot.com", "netlify.app", "pages.dev", "firebaseapp.com", "wordpress.com",
})


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
    if is_ip_literal(host):
        return "", f"{host!r} is an IP address, not a domain: list it as a Host instead"
    if host in PUBLIC_SUFFIXES:
        # SECURITY: as above, for a public suffix of two labels or more ("co.uk", "com.au").
        return "", (f"{host!r} is a public suffix (sites of many owners sit under it): the proxy refuses it as a "
                    f"domain; list the vendor's own domain (vendor.{host}) instead")
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
    scheme: str | None = None  # the only scheme the rule matched; None: any
    port: int | None = None  # the only port it matched (its scheme's default when none is written)


def anonymous_pattern(wildurl: str) -> tuple[AnonPattern | None, str]:
    """An AnonymousURL wildcard URL as a host glob, scheme, port and path glob, or
    ``(None, problem)``.

    EZproxy compares the pattern (``*`` matches anything) with the whole URL, query included;
    anonymous paths match the path alone, whatever the query. So a translation must match no
    URL the rule did not: ``*.woff*`` (no host) becomes the path glob ``/*.woff*`` for every
    host; ``https://api.v.com/open/*`` becomes https, host ``api.v.com``, port 443 and path
    ``/open/*``. Refused: a pattern that requires or limits a query string (``/open?*``: ``/open*``
    would also open ``/open-admin``), and one not ending in ``*`` (EZproxy opened that URL only
    without a query string; a path glob opens it with any). Whether the scheme and port fit
    every host of the vendor is decided by the caller (``tables._anonymous``).
    """
    match = _SCHEME.match(wildurl)
    scheme: str | None = None
    port: int | None = None
    if match is None and wildurl.startswith("*"):
        host_glob: str | None = None
        path = "/" + wildurl
    elif match is not None:
        scheme = match.group(1).lower()
        if scheme not in DEFAULT_PORTS:
            return None, f"names the scheme {scheme}://, which the proxy does not serve"
        rest = wildurl[match.end():]
        cut = re.search(r"[/?]", rest)
        host_part, path = (rest[: cut.start()], rest[cut.start():]) if cut else (rest, "")
        host_glob, colon, port_text = host_part.lower().partition(":")
        if not host_glob:
            return None, "names no host"
        if colon:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                return None, f"names the port {port_text!r}, which a path pattern cannot express"
            port = int(port_text)
        elif not host_glob.endswith("*"):  # "https://h*" matches any port (":8443/..." too)
            port = DEFAULT_PORTS[scheme]
        if not path:
            path = "/*" if host_part.endswith("*") else "/"
    else:
        return None, "is compared with whole URLs (https://...) and this one can never match one"
    if "?" in path:
        return None, ("limits or requires a query string, which anonymous paths (matched on the path alone) cannot "
                      "express")
    if not path.endswith("*"):
        return None, ("does not end with *: EZproxy opened that URL only without a query string, and an anonymous "
                      "path would open it with any")
    if not path.startswith("/"):
        path = "/" + path
    # fnmatch reads "[" as a character class; an EZproxy wildcard URL only knows "*".
    return AnonPattern(host_glob, path.replace("[", "[[]"), scheme, port), ""


def host_glob_matches(glob: str, host: str) -> bool:
    return fnmatch.fnmatchcase(host, glob)
