"""EZproxy directives -> vendor entries and library networks, with a finding for everything else.

EZproxy reads config.txt top to bottom. A database definition ("stanza") starts at ``Title``
(or at a ``URL`` with no Title before it) and collects the URL, Host, Domain and Find/Replace
lines after it. Position-dependent directives set a state that every stanza *started after
them* takes, until changed: ``Group``, ``Option CookiePassThrough`` (ended by ``Option Cookie``,
``DomainCookieOnly``, ``NoCookie``), ``AnonymousURL`` rules (``AnonymousURL -*`` clears them),
``AutoLoginIP``/``ExcludeIP``/``IncludeIP``, and the privacy-breaking ``AddUserHeader`` and
``Option X-Forwarded-For``. ``NeverProxy`` is global.

This module replays that reading. The rules that need the whole table (the first stanza to
match a host keeps it, NeverProxy, anonymous paths that must not open more than EZproxy did,
library networks) run when every stanza is known, in ``tables.finish``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from proxy.ezproxy.directives import FIXED, STANZA_SCOPED
from proxy.ezproxy.iprange import RangeSet, parse_range
from proxy.ezproxy.parser import Directive
from proxy.ezproxy.report import INSTEAD_SHORT, Finding, Kind
from proxy.ezproxy.urls import (
    PERSONAL_TEMPLATES,
    domain_of,
    looks_like_placeholder,
    origins_of,
    strip_template,
    templates_in,
    translate_replace,
)
from proxy.vendors import Origin, parse_absolute_url

MAX_FIND = 4096  # the proxy's limit on a find text (config.py)
# SECURITY: the widest AutoLoginIP/ExcludeIP range carried into a library network, as host bits
# per IP version: a /8 for IPv4 (a large campus), a /32 for IPv6 (a whole ISP allocation).
MAX_NETWORK_BITS = {4: 24, 6: 96}
# AnonymousURL rules in force at once (until "AnonymousURL -*"); real stanzas have a handful.
MAX_ANON_IN_FORCE = 64
_ID_CHARS = re.compile(r"[^a-z0-9]+")
_TITLE_NOISE = re.compile(r"\s*\((?:updated|added|revised|new|rev\.?)\b[^)]*\)\s*$", re.IGNORECASE)
# Version notes with a date, as OCLC and vendors write them at the end of a Title: "(20250331)",
# "(OCLC IncludeFile updated 20210805)", "(vendor update 20231107)", "Updated 20220728)".
_TITLE_DATE_NOTE = re.compile(
    r"\s*(\(\s*)?((?:oclc|includefile|stanza|vendor|last|updated?|added|revised|created|rev\.?)\s+)*"
    r"(?:19|20)\d\d-?[01]\d-?[0-3]\d\s*(\))?\s*$", re.IGNORECASE)
_GROUP_CHARS = re.compile(r"[^a-z0-9_-]+")
# LogFormat fields about the patron: %u (user), %h (client address), and request headers that
# carry a session, an address, a cookie, credentials or the page the patron came from.
_LOG_PERSONAL = re.compile(
    r"%(?:\{[^}]*\})?[uh]"
    r"|%\{(?i:ezproxy-[^}]*|x-forwarded-for|forwarded|x-real-ip|cookie|authorization|referer)\}i")
# EZproxy expression variables about the patron (login:user, session:user, user:..., the client IP).
_PERSONAL_EXPRESSION = re.compile(r"\b(?:login|session|user|auth|ip|client)\w*:", re.IGNORECASE)
_REWRITTEN_MIME = ("text/", "application/json", "application/javascript", "application/x-javascript",
                   "application/ecmascript", "application/xml", "application/xhtml+xml")


@dataclass(frozen=True, slots=True)
class AnonRule:
    allow: bool
    wildurl: str
    regex: bool
    options_only: bool
    case_sensitive: bool
    file: str
    line: int


@dataclass(eq=False)  # identity: two stanzas with the same text are still two databases
class Stanza:
    """One EZproxy database definition, as read, with the positional state it started under."""

    id: str
    title: str
    file: str
    line: int
    groups: tuple[str, ...]
    cookie_passthrough: bool
    anonymous_rules: tuple[AnonRule, ...]
    excluded: RangeSet
    autologin: RangeSet
    start: str = ""
    description: str = ""
    origins: list[Origin] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    replace: list[tuple[str, str]] = field(default_factory=list)
    anonymous_paths: list[str] = field(default_factory=list)
    dropped: str = ""  # why the stanza is not written, when it is not
    source_title: str = ""  # the Title line as written, with OCLC's "(updated ...)" version note
    _known: set[Origin] = field(default_factory=set, repr=False)  # add_origins' view of ``origins``
    _known_list: list[Origin] | None = field(default=None, repr=False)

    @property
    def where(self) -> tuple[str, int]:
        return self.file, self.line

    @property
    def start_origin(self) -> Origin | None:
        parsed = parse_absolute_url(self.start) if self.start else None
        return parsed.origin if parsed else None

    def add_origins(self, origins: tuple[Origin, ...]) -> None:
        # The set of origins is kept between calls (a stanza can list thousands of hosts), and
        # rebuilt only when ``origins`` was replaced or changed elsewhere.
        if self._known_list is not self.origins or len(self._known) != len(self.origins):
            self._known, self._known_list = set(self.origins), self.origins
        for origin in origins:
            if origin not in self._known:
                self._known.add(origin)
                self.origins.append(origin)


def derive_id(title: str, taken: set[str], next_suffix: dict[str, int] | None = None) -> str:
    """A vendor id from a title: ASCII-folded, lower-case, dashes, at most 40 characters,
    unique among ``taken`` by a numeric suffix. Deterministic for a given input order.
    ``next_suffix`` remembers, per base, where to resume counting (a thousand stanzas with the
    same title would otherwise try 2, 3, ... again for each)."""
    folded = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().lower()
    base = _ID_CHARS.sub("-", folded).strip("-") or "vendor"
    if len(base) > 40:
        base = base[:40].rsplit("-", 1)[0] if "-" in base[:40] else base[:40]
    candidate, n = base, 2 if next_suffix is None else next_suffix.get(base, 2)
    while candidate in taken:
        suffix = f"-{n}"
        candidate = base[: 40 - len(suffix)].rstrip("-") + suffix
        n += 1
    if next_suffix is not None:
        next_suffix[base] = n
    taken.add(candidate)
    return candidate


def clean_title(raw: str) -> tuple[str, bool]:
    """The title patrons see (without OCLC's "(updated 20250529)"), and whether it was -Hide."""
    hidden = False
    words = raw.split()
    while words and words[0].lower() in ("-hide", "-hidden"):
        hidden = True
        words.pop(0)
    title = _TITLE_NOISE.sub("", " ".join(words)).strip()
    note = _TITLE_DATE_NOTE.search(title)
    if note and note.start() > 0 and (note.group(1) or note.group(2) or note.group(3)):
        title = title[: note.start()].strip()
    return title, hidden


def map_group(name: str, default_groups: tuple[str, ...]) -> tuple[str, ...]:
    """EZproxy's group ``Default`` is the library's own patrons: it becomes ``default_groups``;
    other names are lower-cased with odd characters turned into dashes."""
    if name.lower() == "default":
        return default_groups
    return (_GROUP_CHARS.sub("-", name.lower()).strip("-") or "group",)


class Replay:
    """The reading state: stanzas so far, findings, and the position-dependent settings."""

    def __init__(self, default_groups: tuple[str, ...]) -> None:
        self.default_groups = default_groups
        self.findings: list[Finding] = []
        self.stanzas: list[Stanza] = []
        self.ids: set[str] = set()
        self.id_next: dict[str, int] = {}
        self.current: Stanza | None = None
        self.pending_find: Directive | None = None
        # Position-dependent state: what a stanza started now would take.
        self.groups = default_groups
        self.cookie_passthrough = False
        self.anon: list[AnonRule] = []
        self.excluded = RangeSet()
        self.autologin: list[tuple[RangeSet, tuple[str, ...], Directive]] = []
        self.exclude_lines: list[Directive] = []
        self.never_proxy: list[Directive] = []
        self.anon_rules_all: list[AnonRule] = []
        self.anon_refused: set[AnonRule] = set()  # over MAX_ANON_IN_FORCE: reported when read
        self.anon_used: set[AnonRule] = set()
        self.anon_reported: set[tuple[AnonRule, str]] = set()
        self.stanza_at_network: dict[int, int] = {}  # id(directive) -> stanzas before it
        # Position-dependent privacy directives in force: name -> (index of its finding, vendor ids
        # it would have applied to), so the report can say which databases it concerned.
        self.leaks: dict[str, tuple[int, list[str]]] = {}

    # -- findings ------------------------------------------------------------------------------

    def add(self, kind: Kind, d: Directive, message: str) -> None:
        """A finding at a directive; it names the current vendor when the directive belongs to one."""
        vendor = self.current.id if self.current and d.name in STANZA_SCOPED else ""
        self.findings.append(Finding(kind, d.file, d.line, d.name, message, vendor))

    def add_at(self, kind: Kind, where: tuple[str, int], name: str, message: str, vendor: str = "") -> None:
        self.findings.append(Finding(kind, where[0], where[1], name, message, vendor))

    # -- reading -------------------------------------------------------------------------------

    def feed(self, d: Directive) -> None:
        if self.pending_find is not None and d.name != "Replace":
            self.add(Kind.ERROR, self.pending_find, "has no Replace on the next line: the pair is not carried over")
            self.pending_find = None
        handler = _HANDLERS.get(d.name)
        if handler is not None:
            handler(self, d)
        elif d.name.startswith("Option "):
            self.option(d)
        elif d.name in FIXED:
            kind, reason = FIXED[d.name]
            self.fixed(d, kind, reason)
        else:
            self.add(Kind.NO_EQUIVALENT, d, f"{d.raw_name!r} is not an EZproxy directive this importer knows: not "
                     "carried over")

    def fixed(self, d: Directive, kind: Kind, reason: str) -> None:
        if kind is Kind.PRIVACY:
            reason = f"{reason}: {INSTEAD_SHORT}"
        self.add(kind, d, reason)

    def need_stanza(self, d: Directive) -> Stanza | None:
        if self.current is None:
            self.add(Kind.ERROR, d, "appears before any Title or URL line (outside a database definition): ignored")
        return self.current

    def start_stanza(self, title: str, d: Directive) -> Stanza:
        stanza = Stanza(
            id=derive_id(title, self.ids, self.id_next), title=title, file=d.file, line=d.line, groups=self.groups,
            cookie_passthrough=self.cookie_passthrough, anonymous_rules=tuple(self.anon),
            excluded=self.excluded, autologin=_union(r for r, _, _ in self.autologin),
        )
        self.stanzas.append(stanza)
        self.current = stanza
        for _, affected in self.leaks.values():
            affected.append(stanza.id)
        return stanza

    def leak_starts(self, d: Directive, message: str) -> None:
        """A position-dependent privacy directive: flagged, and followed until it is ended."""
        self.add(Kind.PRIVACY, d, message)
        self.leaks[d.name] = (len(self.findings) - 1, [])

    def leak_ends(self, name: str) -> None:
        index, affected = self.leaks.pop(name, (-1, []))
        if index >= 0 and affected:
            old = self.findings[index]
            more = "..." if len(affected) > 8 else ""
            self.findings[index] = Finding(old.kind, old.file, old.line, old.directive,
                                           f"{old.message} (it applied to {', '.join(affected[:8])}{more})", old.vendor)

    def title(self, d: Directive) -> None:
        title, hidden = clean_title(d.args)
        stanza = self.start_stanza(title or "Untitled database", d)
        stanza.source_title = d.args
        if not title:
            self.add(Kind.NOTE, d, f"has no text: titled {stanza.title!r}")
        if hidden:
            self.add(Kind.NO_EQUIVALENT, d, "-Hide: every vendor is listed on /databases (patrons see which need "
                     "another card)")

    def url(self, d: Directive) -> None:
        words = d.args.split()
        qualifiers: list[str] = []
        while len(words) > 1 and words[0].startswith("-"):
            qualifiers.append(words.pop(0))
        if any(q.lower().startswith("-form") for q in qualifiers) and len(words) > 1 and "://" not in words[0]:
            words.pop(0)  # "URL -Form=post name url": the form's name
        target = " ".join(words)
        stanza = self.current
        if stanza is None or stanza.start or stanza.dropped:
            host = re.sub(r"^[a-z]+://", "", target.lower()).split("/", 1)[0]
            stanza = self.start_stanza(host or "Untitled database", d)
            self.add(Kind.NOTE, d, f"URL with no Title before it starts a new database, titled {stanza.title!r}")
        for qualifier in qualifiers:
            if qualifier.lower().startswith("-form"):
                self.add(Kind.NO_EQUIVALENT, d, "-Form: a login form EZproxy filled in with the library's shared "
                         "account is not supported; patrons will see the vendor's own sign-in page")
            else:
                self.add(Kind.NO_EQUIVALENT, d, f"qualifier {qualifier} is not supported: ignored")
        self.check_templates(d, target)
        start = strip_template(target)
        parsed = parse_absolute_url(start)
        origins, problem = origins_of(start)
        if parsed is None or not origins:
            stanza.dropped = f"its URL {target!r} is not a usable http(s) address"
            if looks_like_placeholder(target):
                self.add(Kind.FILL_IN, d, f"{target!r} holds a placeholder for your library's value: "
                         f"{stanza.title!r} is not imported until it is filled in")
            else:
                self.add(Kind.ERROR, d, f"{target!r} is not a usable http:// or https:// address: "
                         f"{stanza.title!r} is not imported" + (f" ({problem})" if problem else ""))
            return
        if looks_like_placeholder(start):
            self.add(Kind.NOTE, d, f"{start!r} looks like a value to fill in for your library: edit it")
        stanza.start = start
        stanza.add_origins(origins)

    def check_templates(self, d: Directive, text: str) -> None:
        for letter in templates_in(text):
            if letter in PERSONAL_TEMPLATES:
                self.add(Kind.PRIVACY, d, f"the URL template ^{letter.upper()} inserts {PERSONAL_TEMPLATES[letter]}: "
                         f"removed from the URL; {INSTEAD_SHORT}")
            else:
                self.add(Kind.NO_EQUIVALENT, d, f"the URL template ^{letter} has no equivalent: removed from the URL")

    def host(self, d: Directive) -> None:
        stanza = self.need_stanza(d)
        if stanza is None:
            return
        self.check_templates(d, d.args)
        if d.args.startswith("*.") and "/" not in d.args:
            if domain_of(d.args)[0]:
                self.add(Kind.NOTE, d, f"a wildcard host: carried over as the domain {d.args[2:]!r}")
            self.domain(d)
            return
        origins, problem = origins_of(d.args)
        if not origins:
            if looks_like_placeholder(d.args):
                self.add(Kind.FILL_IN, d, f"{d.args!r} holds a placeholder for your library's value: host not "
                         "carried over until it is filled in")
            else:
                self.add(Kind.ERROR, d, f"{problem}: host not carried over")
            return
        if looks_like_placeholder(d.args):
            self.add(Kind.NOTE, d, f"{d.args!r} looks like a value to fill in for your library: edit it")
        stanza.add_origins(origins)

    def domain(self, d: Directive) -> None:
        stanza = self.need_stanza(d)
        if stanza is None:
            return
        domain, problem = domain_of(d.args)
        if not domain:
            self.add(Kind.ERROR, d, f"{problem}: not carried over")
        elif domain not in stanza.domains:
            stanza.domains.append(domain)

    def description(self, d: Directive) -> None:
        stanza = self.need_stanza(d)
        if stanza is not None:
            stanza.description = d.args

    def find(self, d: Directive) -> None:
        if self.need_stanza(d) is not None:
            self.pending_find = d

    def replace(self, d: Directive) -> None:
        find, self.pending_find = self.pending_find, None
        stanza = self.current
        if find is None or stanza is None:
            self.add(Kind.ERROR, d, "has no Find on the line before it: not carried over")
            return
        if not find.args:
            self.add(Kind.ERROR, find, "has no text to find: the pair is not carried over")
            return
        if len(find.args.encode()) > MAX_FIND:
            self.add(Kind.ERROR, find, f"finds more than {MAX_FIND} bytes: the pair is not carried over")
            return
        text = translate_replace(d.args)
        if text.unsupported:
            self.add(Kind.NO_EQUIVALENT, d, f"uses {', '.join(text.unsupported)} (the proxy's own name, or "
                     "\"do not rewrite\"), which rules here cannot express: the pair is not carried over")
            return
        if find.args == text.text:
            self.add(Kind.DEFAULT, d, "only asks for a vendor host to be proxied: the proxy rewrites configured "
                     "host names itself")
            return
        stanza.replace.append((find.args, text.text))
        if text.host_markers:
            self.add(Kind.NOTE, d, f"^P/^S {', '.join(text.host_markers)} written as the vendor host; the proxy "
                     "rewrites it after the rule runs")

    def group(self, d: Directive) -> None:
        names = [n for n in re.split(r"[+\s]+", d.args) if n]
        if not names:
            self.add(Kind.ERROR, d, "names no group: ignored")
            return
        mapped: list[str] = []
        for name in names:
            mapped.extend(g for g in map_group(name, self.default_groups) if g not in mapped)
        self.groups = tuple(mapped)
        self.add(Kind.NOTE, d, f"databases after this line are licensed to groups {', '.join(self.groups)}: "
                 "patrons need these groups from the directory")

    def ip_range(self, d: Directive, opens: bool = False) -> RangeSet | None:
        """The range of an address line. ``opens``: it becomes a library network (machines there
        read vendors without signing in), so a range wider than MAX_NETWORK_BITS is refused."""
        found = parse_range(d.args)
        if found is None:
            self.add(Kind.ERROR, d, f"{d.args!r} is not an address, a range first-last, or a CIDR network: ignored")
            return None
        for version, first, last in found.intervals:
            bits = MAX_NETWORK_BITS[version]
            if opens and last - first + 1 > 1 << bits:
                # SECURITY: "AutoLoginIP 0.0.0.0-255.255.255.255" would open every vendor to the internet.
                prefix = (32 if version == 4 else 128) - bits
                self.add(Kind.ERROR, d, f"{d.args.strip()!r} is wider than a /{prefix} (IPv{version}): a library "
                         "network that large would let much of the internet read vendors without signing in; "
                         "ignored. List the library's own ranges")
                return None
        return found

    def autologin_ip(self, d: Directive) -> None:
        found = self.ip_range(d, opens=True)
        if found is not None:
            self.autologin.append((found, self.groups, d))
            self.stanza_at_network[id(d)] = len(self.stanzas)

    def exclude_ip(self, d: Directive) -> None:
        found = self.ip_range(d, opens=True)
        if found is not None:
            self.excluded = self.excluded.union(found)
            self.exclude_lines.append(d)
            self.stanza_at_network[id(d)] = len(self.stanzas)

    def include_ip(self, d: Directive) -> None:
        found = self.ip_range(d)
        if found is not None:
            self.excluded = self.excluded.minus(found)

    def anonymous_url(self, d: Directive) -> None:
        words = d.args.split()
        flags: set[str] = set()
        while words and words[0].lower() in ("-re", "-cs", "-options"):
            flags.add(words.pop(0).lower())
        wildurl = " ".join(words)
        allow = not wildurl.startswith("-")
        wildurl = wildurl[1:] if wildurl[:1] in "+-" else wildurl
        if not wildurl:
            self.add(Kind.ERROR, d, "names no URL pattern: ignored")
            return
        rule = AnonRule(allow, wildurl, "-re" in flags, "-options" in flags, "-cs" in flags, d.file, d.line)
        if not allow and wildurl == "*":
            self.anon.clear()
            return
        if not allow:
            same = [r for r in self.anon if r.allow and r.wildurl == wildurl and r.regex == rule.regex]
            if same:
                self.anon = [r for r in self.anon if r not in same]
                return
        self.anon_rules_all.append(rule)
        if len(self.anon) >= MAX_ANON_IN_FORCE:
            # Rules stay in force until "AnonymousURL -*"; without it every later stanza would
            # carry all of them (thousands of stanzas x thousands of rules). Fail closed.
            self.add(Kind.NO_EQUIVALENT, d, f"more than {MAX_ANON_IN_FORCE} AnonymousURL rules are in force with no "
                     "AnonymousURL -* between them (OCLC's stanzas end with it): not carried over; those requests "
                     "need sign-in")
            self.anon_refused.add(rule)
            return
        self.anon.append(rule)

    def never_proxy_line(self, d: Directive) -> None:
        self.never_proxy.append(d)

    def add_user_header(self, d: Directive) -> None:
        self.leak_ends("AddUserHeader")
        if d.args:
            self.leak_starts(d, f"sends the patron's user name to vendors in a request header: {INSTEAD_SHORT}")
        else:
            self.add(Kind.DEFAULT, d, "ends an AddUserHeader: the proxy never adds user headers")

    def http_header(self, d: Directive) -> None:
        """``HTTPHeader [-request|-response] [-process|-block|-inject|-edit|-unrewrite] name [value]``."""
        from proxy.forward.headers import ALLOWED_REQUEST

        words = d.args.split()
        flags = {w.lower() for w in words if w.startswith("-")}
        name = next((w for w in words if not w.startswith("-")), "")
        value = d.args.split(name, 1)[1].strip() if name else ""
        if not name:
            self.add(Kind.ERROR, d, "names no header: ignored")
        elif _PERSONAL_EXPRESSION.search(value):
            self.add(Kind.PRIVACY, d, f"{name}: its value is computed from the patron's session, user or address: "
                     f"{INSTEAD_SHORT}")
        elif "-inject" in flags or "-edit" in flags:
            self.add(Kind.NO_EQUIVALENT, d, f"{name}: the proxy adds or edits no request headers of its own "
                     "besides the membership assertion")
        elif "-response" in flags:
            self.add(Kind.DEFAULT, d, f"{name}: response headers are mapped by the proxy (URLs in them rewritten, "
                     "cookies kept server-side, the rest passed)")
        elif name.lower() in ALLOWED_REQUEST:
            self.add(Kind.DEFAULT, d, f"{name} is on the proxy's request header allow-list: it is always forwarded")
        elif name.lower() in ("authorization", "cookie", "proxy-authorization"):
            # SECURITY: these could carry the patron's credentials for other sites; never forwarded.
            self.add(Kind.NO_EQUIVALENT, d, f"{name} is never forwarded (it can carry credentials): the vendor's "
                     "own sign-in state is kept in the server-side cookie jar instead")
        else:
            self.add(Kind.NO_EQUIVALENT, d, f"{name}: request headers leave the proxy only from a fixed allow-list "
                     "and this one is not on it; if the site needs it, raise it with the proxy's maintainers")

    def log_format(self, d: Directive) -> None:
        personal = _LOG_PERSONAL.findall(d.args)
        if personal:
            self.add(Kind.PRIVACY, d, f"logs {', '.join(sorted(set(personal)))} (user name, client address, "
                     "session or other patron data): not carried over; the proxy's logs never hold a patron, an "
                     "address, a path or a query")
        else:
            self.add(Kind.DEFAULT, d, "the proxy keeps no per-request log; usage is counted per vendor and day")

    def audit(self, d: Directive) -> None:
        if d.args:
            self.add(Kind.PRIVACY, d, "audits events with user names and client addresses: not carried over; the "
                     "proxy keeps failed sign-ins only under rotating keyed hashes, never names or addresses")
        else:
            self.add(Kind.DEFAULT, d, "no audit events named")

    def mime_filter(self, d: Directive) -> None:
        mime = d.args.split(" ", 1)[0].lower()
        if mime == "text/event-stream":
            self.add(Kind.NO_EQUIVALENT, d, "event streams are passed through unrewritten (rewriting would hold back "
                     "each event); links in them reach the vendor directly")
        elif mime.startswith(_REWRITTEN_MIME):
            self.add(Kind.DEFAULT, d, f"{mime} bodies are always rewritten (vendor host names mapped)")
        else:
            self.add(Kind.NO_EQUIVALENT, d, f"{mime or 'this type'} bodies are not rewritten by the proxy")

    def option(self, d: Directive) -> None:
        if d.name == "Option CookiePassThrough":
            self.cookie_passthrough = True
            return
        if d.name in ("Option Cookie", "Option DomainCookieOnly", "Option NoCookie", "Option NoCookiePassThrough"):
            self.cookie_passthrough = False
        if d.name in ("Option X-Forwarded-For", "Option NoX-Forwarded-For"):
            self.leak_ends("Option X-Forwarded-For")
        if d.name == "Option X-Forwarded-For":
            self.leak_starts(d, f"{FIXED[d.name][1]}: {INSTEAD_SHORT}")
        elif d.name in FIXED:
            kind, reason = FIXED[d.name]
            self.fixed(d, kind, reason)
        else:
            self.add(Kind.NO_EQUIVALENT, d, f"{d.name.split(' ', 1)[1]!r} is not an EZproxy option this importer "
                     "knows: not carried over")


def _union(sets: Iterable[RangeSet]) -> RangeSet:
    out = RangeSet()
    for item in sets:
        out = out.union(item)
    return out


_HANDLERS = {
    "Title": Replay.title, "URL": Replay.url, "Host": Replay.host, "HostJavaScript": Replay.host,
    "Domain": Replay.domain, "DomainJavaScript": Replay.domain, "Description": Replay.description,
    "Find": Replay.find, "Replace": Replay.replace, "Group": Replay.group,
    "AutoLoginIP": Replay.autologin_ip, "ExcludeIP": Replay.exclude_ip, "IncludeIP": Replay.include_ip,
    "AnonymousURL": Replay.anonymous_url, "NeverProxy": Replay.never_proxy_line,
    "AddUserHeader": Replay.add_user_header, "LogFormat": Replay.log_format, "LogSPU": Replay.log_format,
    "Audit": Replay.audit, "MimeFilter": Replay.mime_filter, "HTTPHeader": Replay.http_header,
}


def replay(directives: list[Directive], default_groups: tuple[str, ...]) -> Replay:
    """Replay the directives in order (see the module docstring); ``tables.finish`` completes it."""
    state = Replay(default_groups)
    for directive in directives:
        state.feed(directive)
    if state.pending_find is not None:
        state.add(Kind.ERROR, state.pending_find, "has no Replace after it: not carried over")
    for name in list(state.leaks):
        state.leak_ends(name)
    return state
