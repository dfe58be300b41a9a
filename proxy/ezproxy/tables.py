"""The rules that need every stanza at once, applied after the reading (``convert.replay``).

In this order, because each works on what the one before left:

1. A stanza with no URL is not imported (EZproxy needs one; the proxy needs a starting point).
2. ``NeverProxy`` takes matching hosts out of every stanza. A NeverProxy host under a stanza's
   Domain cannot be taken out (our domains have no exceptions): reported.
3. Duplicates: EZproxy gives a host to the first database that lists it, and the proxy refuses
   a host in two vendors, so later stanzas lose it (reported, naming the keeper). A stanza whose
   starting point's host went to an earlier one is not imported as it stands (its start link
   works through the earlier vendor), but its other hosts, which EZproxy still proxied, are kept:
   merged into the earlier vendor when nothing about them changes, else in a vendor of their own.
4. AnonymousURL rules become ``anonymous_paths``, only where that opens no more than EZproxy
   did: anonymous paths apply to every host, scheme and port of a vendor, so a rule naming one
   host, scheme or port of several is refused (those requests keep needing sign-in) and reported.
5. ``AutoLoginIP`` and ``ExcludeIP`` become ``[[network.library]]`` entries (with the groups
   the lines applied to, never more; ranges wider than a /8 are refused when read); stanzas that
   EZproxy sent straight to the vendor from an excluded address get ``on_site = "direct"``.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from proxy.ezproxy.convert import AnonRule, Replay, Stanza
from proxy.ezproxy.iprange import RangeSet
from proxy.ezproxy.parser import Directive
from proxy.ezproxy.report import Finding, Kind
from proxy.ezproxy.urls import AnonPattern, anonymous_pattern, host_glob_matches
from proxy.vendors import DEFAULT_PORTS, Origin


@dataclass(frozen=True, slots=True)
class Network:
    name: str
    cidrs: tuple[str, ...]
    groups: tuple[str, ...]


@dataclass
class Conversion:
    stanzas: list[Stanza]
    networks: list[Network]
    findings: list[Finding]

    @property
    def vendors(self) -> list[Stanza]:
        return [s for s in self.stanzas if not s.dropped]

    def on_site(self, stanza: Stanza) -> str:
        return "direct" if stanza.excluded and not stanza.autologin else "proxy"


def finish(state: Replay) -> Conversion:
    for stanza in state.stanzas:
        if not stanza.dropped and not stanza.start:
            stanza.dropped = "it has no URL line"
            hint = " (it looks like several directives on one line: were line breaks lost?)" if re.search(
                r"\s(?:U|URL)\s+https?://", stanza.title, re.IGNORECASE) else ""
            state.add_at(Kind.ERROR, stanza.where, "Title", f"{stanza.title!r} has no URL line (the starting point): "
                         f"not imported{hint}", stanza.id)
    for stanza in state.stanzas:
        # A domain under another domain of the same stanza adds nothing (nothing is lost).
        stanza.domains = [d for d in stanza.domains if not any(d.endswith("." + p) for p in stanza.domains)]
    _never_proxy(state)
    _duplicates(state)
    for stanza in state.stanzas:
        if not stanza.dropped:
            _anonymous(state, stanza)
    _unused_anonymous(state)
    networks = _networks(state)
    return Conversion(state.stanzas, networks, state.findings)


def _say(state: Replay, kind: Kind, d: Directive, message: str, stanza: Stanza | None) -> None:
    state.add_at(kind, (d.file, d.line), d.name, message, stanza.id if stanza else "")


def _live(state: Replay) -> list[Stanza]:
    return [s for s in state.stanzas if not s.dropped]


def _suffixes(host: str) -> list[str]:
    """``a.b.c`` -> ``["a.b.c", "b.c", "c"]``."""
    labels = host.split(".")
    return [".".join(labels[n:]) for n in range(len(labels))]


class _NeverIndex:
    """Hosts and domains of the live stanzas, indexed once so that each NeverProxy line costs
    the labels of its host, not a pass over the table (thousands of hosts, hundreds of lines)."""

    def __init__(self, stanzas: list[Stanza]) -> None:
        self.by_host: dict[str, list[Stanza]] = defaultdict(list)
        self.hosts_under: dict[str, list[str]] = defaultdict(list)  # suffix -> hosts at or under it
        self.by_domain: dict[str, list[Stanza]] = defaultdict(list)
        self.domains_under: dict[str, list[str]] = defaultdict(list)  # suffix -> domains at or under it
        for stanza in stanzas:
            for host in dict.fromkeys(o.host for o in stanza.origins):
                if host not in self.by_host:
                    for suffix in _suffixes(host):
                        self.hosts_under[suffix].append(host)
                self.by_host[host].append(stanza)
            for domain in stanza.domains:
                if domain not in self.by_domain:
                    for suffix in _suffixes(domain):
                        self.domains_under[suffix].append(domain)
                self.by_domain[domain].append(stanza)

    def hosts(self, glob: str) -> list[str]:
        """Hosts named by some vendor that the NeverProxy host (or ``*.`` glob) matches."""
        if not any(ch in glob for ch in "*?["):
            return [glob] if glob in self.by_host else []
        rest = glob[2:]
        if glob.startswith("*.") and not any(ch in rest for ch in "*?["):
            return [h for h in self.hosts_under.get(rest, []) if h != rest]
        pattern = re.compile(fnmatch.translate(glob))
        return [h for h in self.by_host if pattern.fullmatch(h)]

    def domains(self, glob: str) -> list[str]:
        """Vendor domains some host the glob matches lies under (default ports)."""
        rest = glob[2:] if glob.startswith("*.") else glob
        if any(ch in rest for ch in "*?["):
            probe = glob.lstrip("*.")
            return [d for d in self.by_domain if probe == d or probe.endswith("." + d) or d.endswith("." + probe)]
        found = [s for s in _suffixes(rest) if s in self.by_domain]
        if glob.startswith("*."):
            found += [d for d in self.domains_under.get(rest, []) if d != rest]
        return list(dict.fromkeys(found))

    def domain_of(self, host: str) -> str | None:
        """The domain of a vendor still imported that serves ``host`` (default ports)."""
        return next((s for s in _suffixes(host) if any(not v.dropped for v in self.by_domain.get(s, ()))), None)


def _origin_filter(scheme: str | None, port: int | None) -> Callable[[Origin], bool]:
    return lambda o: (scheme is None or o.scheme == scheme) and (port is None or o.port == port)


def _never_proxy(state: Replay) -> None:
    """EZproxy never proxies a NeverProxy host (``[scheme://]host[:port]``, ``*`` allowed), even
    one of a database's Host or Domain lines. Our vendors have hosts (those are taken out) and
    domains, which have no exceptions: a NeverProxy host under a domain stays proxied (on the
    domain's default ports), and the report says so rather than claim it was left out. Stanzas
    whose starting point is NeverProxy are dropped first, so no finding speaks of a vendor that
    a later NeverProxy line removes."""
    index = _NeverIndex(_live(state))
    lines: list[tuple[Directive, Callable[[Origin], bool], set[str], str, bool]] = []
    for d in state.never_proxy:
        spec = d.args.strip().lower()
        scheme = spec.split("://", 1)[0] if "://" in spec else None
        spec = spec.split("://", 1)[1] if "://" in spec else spec
        glob, colon, port_text = spec.split("/", 1)[0].partition(":")
        port = int(port_text) if port_text.isdigit() else None
        if not glob or (colon and port is None) or (scheme is not None and scheme not in DEFAULT_PORTS):
            _say(state, Kind.ERROR, d, f"{d.args.strip()!r} is not a host, host:port or http(s)://host[:port]: "
                 "ignored", None)
            continue

        # A domain serves its hosts on default ports only: there a NeverProxy host stays proxied.
        default_only = port is None or (scheme is not None and port == DEFAULT_PORTS[scheme]) or (
            scheme is None and port in DEFAULT_PORTS.values())
        lines.append((d, _origin_filter(scheme, port), set(index.hosts(glob)), glob, default_only))
    touched: set[int] = set()
    for d, matches, hosts, _, _ in lines:
        for stanza in dict.fromkeys(s for h in sorted(hosts) for s in index.by_host[h]):
            start = stanza.start_origin
            if not stanza.dropped and start is not None and start.host in hosts and matches(start):
                touched.add(id(d))
                stanza.dropped = "its starting point's host is NeverProxy"
                _say(state, Kind.NO_EQUIVALENT, d, f"the starting point {stanza.start!r} of {stanza.title!r} is on "
                     "a NeverProxy host (EZproxy sends patrons there directly): not imported; list it as a plain "
                     "link on the library's site instead", stanza)
    for d, matches, hosts, glob, default_only in lines:
        for stanza in dict.fromkeys(s for h in sorted(hosts) for s in index.by_host[h] if not s.dropped):
            removed = [o for o in stanza.origins if o.host in hosts and matches(o)]
            if removed:
                touched.add(id(d))
                _leave_out(state, d, stanza, removed, index)
        for domain in index.domains(glob) if default_only else []:
            for stanza in index.by_domain[domain]:
                if stanza.dropped or domain not in stanza.domains:
                    continue
                touched.add(id(d))
                _say(state, Kind.NO_EQUIVALENT, d, f"{d.args.strip()} lies under the domain {domain} of this "
                     "vendor, which the proxy serves as a whole: it will be proxied (EZproxy did not). List the "
                     "vendor's hosts instead of the domain if it must not be", stanza)
        if id(d) not in touched:
            _say(state, Kind.DEFAULT, d, "hosts in no vendor entry are never proxied", None)


def _leave_out(state: Replay, d: Directive, stanza: Stanza, matched: list[Origin], index: _NeverIndex) -> None:
    """Take ``matched`` out of the stanza's hosts, except where one of its own domains serves
    them anyway (reported by the caller)."""
    own = set(stanza.domains)
    removed = [o for o in matched
               if not (o.default_port and any(s in own for s in _suffixes(o.host)))]
    if not removed:
        return
    gone = set(removed)
    stanza.origins = [o for o in stanza.origins if o not in gone]
    elsewhere = sorted({(o.url, dom) for o in removed if o.default_port
                        for dom in [index.domain_of(o.host)] if dom is not None})
    if elsewhere:
        owners = {dom: next(s.id for s in index.by_domain[dom] if not s.dropped) for _, dom in elsewhere}
        _say(state, Kind.NO_EQUIVALENT, d, f"{', '.join(u for u, _ in elsewhere)} left out of this vendor, but "
             + ", ".join(f"the domain {dom} of {owner!r}" for dom, owner in sorted(owners.items()))
             + " serves it as a whole: it will be proxied there (EZproxy did not)", stanza)
    rest = sorted({o.url for o in removed} - {u for u, _ in elsewhere})
    if rest:
        _say(state, Kind.NOTE, d, f"{', '.join(rest)} left out of this vendor: EZproxy never proxies it, and links "
             "to it will lead straight to the vendor", stanza)


def _covering(host: str, domain_owner: dict[str, Stanza]) -> tuple[str, Stanza] | None:
    """The earlier domain (and its stanza) that covers ``host``: the host itself or a parent."""
    labels = host.split(".")
    for n in range(len(labels) - 1):
        suffix = ".".join(labels[n:])
        if suffix in domain_owner:
            return suffix, domain_owner[suffix]
    return None


def _owner_of(origin: Origin, host_owner: dict[Origin, Stanza], domain_owner: dict[str, Stanza]) -> str | None:
    """Which earlier stanza EZproxy would give this origin to, described; None if no earlier one."""
    keeper = host_owner.get(origin)
    if keeper is not None:
        return keeper.id
    # Our domains cover default ports only, so only there does an earlier Domain take the host.
    covered = _covering(origin.host, domain_owner) if origin.default_port else None
    return covered[1].id if covered else None


def _duplicates(state: Replay) -> None:
    """EZproxy gives a URL to the first database whose Host or Domain matches it; the proxy
    refuses one host in two vendors and prefers an exact host or the longest domain. Leaving each
    later stanza only what no earlier one matches makes both choose the same vendor.

    A stanza whose starting point an earlier one matches is not written as it stands, but EZproxy
    still proxied its other hosts (no earlier database matched them): they are kept, merged into
    the earlier vendor when nothing about them would change (same groups, cookies, on-site mode,
    anonymous rules, no Find/Replace of their own), else in a vendor entry of their own whose
    starting point is its first kept host."""
    host_owner: dict[Origin, Stanza] = {}
    domain_owner: dict[str, Stanza] = {}
    by_id = {s.id: s for s in state.stanzas}
    for stanza in _live(state):
        start = stanza.start_origin
        keeper_id = _owner_of(start, host_owner, domain_owner) if start is not None else None
        lost: dict[str, list[str]] = defaultdict(list)
        kept = []
        for origin in stanza.origins:
            owner_id = _owner_of(origin, host_owner, domain_owner)
            if owner_id is None:
                kept.append(origin)
            else:
                lost[owner_id].append(origin.url)
        kept_domains = []
        for domain in stanza.domains:
            covered = _covering(domain, domain_owner)
            if covered is None:
                kept_domains.append(domain)
            else:
                lost[covered[1].id].append(f"domain {domain}")
        stanza.origins, stanza.domains = kept, kept_domains
        if keeper_id is not None:
            keeper = by_id[keeper_id]
            _start_taken(state, stanza, keeper)
            if not stanza.origins and not stanza.domains:
                continue
        holder = by_id[keeper_id] if keeper_id is not None and stanza.dropped else stanza  # merged: the keeper
        for origin in kept:
            host_owner[origin] = holder
        for domain in kept_domains:
            domain_owner[domain] = holder
        for owner_id, items in lost.items():
            owner = by_id[owner_id]
            state.add_at(Kind.DUPLICATE, stanza.where, "Title", f"{', '.join(items)} already matched by "
                         f"{owner_id!r} ({owner.file}:{owner.line}), which keeps them (EZproxy's first database "
                         "wins): left out here", stanza.id)


def _same_settings(a: Stanza, b: Stanza) -> bool:
    """Whether hosts of ``b`` would be served exactly as EZproxy served them if they were ``a``'s."""
    return (set(a.groups) == set(b.groups) and a.cookie_passthrough == b.cookie_passthrough
            and a.excluded == b.excluded and a.autologin == b.autologin
            and a.anonymous_rules == b.anonymous_rules and all(r in a.replace for r in b.replace))


def _start_taken(state: Replay, stanza: Stanza, keeper: Stanza) -> None:
    """``stanza`` starts at a host ``keeper`` (earlier) already matches: its start link works
    through the keeper. What is left of its hosts and domains (what no earlier database matches,
    already in ``stanza.origins``/``stanza.domains``) is kept, merged into the keeper or as a
    vendor of its own. Merged: ``stanza.dropped`` is set and the caller moves the hosts."""
    said = (f"{stanza.title!r} starts at {stanza.start!r}, a host that {keeper.id!r} ({keeper.file}:{keeper.line}) "
            "already matches; EZproxy gives it to the first database")
    rest = [o.url for o in stanza.origins] + [f"domain {d}" for d in stanza.domains]
    if not rest:
        stanza.dropped = f"its starting point's host belongs to {keeper.id!r}"
        state.add_at(Kind.DUPLICATE, stanza.where, "Title", f"{said}, so this one is not imported: its links work "
                     f"through {keeper.id!r}, and every other host of it is matched by an earlier database",
                     stanza.id)
        return
    shown = f"{', '.join(rest[:10])}{f' and {len(rest) - 10} more' if len(rest) > 10 else ''}"
    if _same_settings(keeper, stanza):
        stanza.dropped = f"its starting point's host belongs to {keeper.id!r}; its other hosts were merged into it"
        keeper.add_origins(tuple(stanza.origins))
        keeper.domains.extend(d for d in stanza.domains if d not in keeper.domains)
        keeper.domains = [d for d in keeper.domains if not any(d.endswith("." + p) for p in keeper.domains)]
        state.add_at(Kind.DUPLICATE, stanza.where, "Title", f"{said}: its start link works through {keeper.id!r}; "
                     f"its other hosts, which no earlier database matches ({shown}), are kept in {keeper.id!r} "
                     "(same groups and settings), so EZproxy's database is not imported as one of its own",
                     stanza.id)
        return
    first = next((o for o in stanza.origins if o.scheme == "https"), stanza.origins[0] if stanza.origins else None)
    old_start = stanza.start
    stanza.start = f"{first.url}/" if first is not None else f"https://{stanza.domains[0]}/"
    state.add_at(Kind.DUPLICATE, stanza.where, "Title", f"{said}: its start link works through {keeper.id!r}; "
                 f"its other hosts, which no earlier database matches ({shown}), are kept in {stanza.id!r} (its "
                 f"groups or settings differ from {keeper.id!r}'s), with the starting point {stanza.start!r} instead "
                 f"of {old_start!r}: check it", stanza.id)


def _anonymous(state: Replay, stanza: Stanza) -> None:
    rules = stanza.anonymous_rules
    exceptions = [r for r in rules if not r.allow]
    hosts = sorted({o.host for o in stanza.origins})
    for rule in rules:
        if not rule.allow:
            continue
        pattern, problem = _pattern_of(rule.wildurl)
        if pattern is not None and pattern.host_glob is not None and not rule.regex:
            matched = [h for h in hosts if host_glob_matches(pattern.host_glob, h)]
            domains_hit = [d for d in stanza.domains if _glob_touches_domain(pattern.host_glob, d)]
            if not matched and not domains_hit:
                continue  # the rule is about another database's hosts
        state.anon_used.add(rule)
        refusal = problem and f"{problem}"
        if rule.regex:
            refusal = "is a regular expression, which cannot be turned safely into path patterns"
        elif rule.options_only:
            refusal = ("-Options opens only OPTIONS requests (CORS preflights), and the proxy has no per-method "
                       "anonymous access (cross-site requests needing a preflight may fail; test the site)")
        elif exceptions:
            first = exceptions[0]
            refusal = (f"comes with the exception at {first.file}:{first.line} (AnonymousURL -{first.wildurl}), "
                       "which anonymous paths cannot express")
        elif pattern is not None and pattern.host_glob is not None:
            others = _outside(pattern, stanza)
            if others:
                named = pattern.host_glob if pattern.scheme is None else f"{pattern.scheme}://{pattern.host_glob}" + (
                    f":{pattern.port}" if pattern.port not in (None, DEFAULT_PORTS[pattern.scheme]) else "")
                refusal = (f"names {named} only, but anonymous paths apply to every host of the vendor, on every "
                           f"scheme and port (also {', '.join(others[:3])}{'...' if len(others) > 3 else ''})")
        if refusal or pattern is None:
            # A refusal that depends on the rule alone is said once, not once per database.
            intrinsic = pattern is None or rule.regex or rule.options_only
            _anon_finding(state, rule, stanza, Kind.NO_EQUIVALENT, f"{refusal}: not carried over; those requests "
                          "need sign-in", once=intrinsic)
            continue
        if pattern.path_glob not in stanza.anonymous_paths:
            stanza.anonymous_paths.append(pattern.path_glob)
        case = "" if rule.case_sensitive else " (matched case-sensitively here)"
        _anon_finding(state, rule, stanza, Kind.NOTE, f"anonymous_paths {pattern.path_glob!r}{case}: these requests "
                      "need no sign-in and carry no membership assertion")


def _outside(pattern: AnonPattern, stanza: Stanza) -> list[str]:
    """The vendor's origins (and domains) the rule did not match in EZproxy: another host,
    another scheme, another port. Anonymous paths would open them too."""
    assert pattern.host_glob is not None
    out = [o.url for o in stanza.origins
           if not host_glob_matches(pattern.host_glob, o.host)
           or (pattern.scheme is not None and o.scheme != pattern.scheme)
           or (pattern.port is not None and o.port != pattern.port)]
    for domain in stanza.domains:
        # A domain covers both schemes on their default ports, every host under it included.
        if not host_glob_matches(pattern.host_glob, "x." + domain):
            out.append(f"*.{domain}")
        if not host_glob_matches(pattern.host_glob, domain):
            out.append(domain)
        if pattern.scheme is not None:
            out.append(f"{'http' if pattern.scheme == 'https' else 'https'}://*.{domain}")
        if pattern.port is not None and pattern.scheme is not None and pattern.port != DEFAULT_PORTS[pattern.scheme]:
            out.append(f"{pattern.scheme}://*.{domain} (port {DEFAULT_PORTS[pattern.scheme]})")
    return list(dict.fromkeys(out))


@functools.lru_cache(maxsize=4096)
def _pattern_of(wildurl: str) -> tuple[AnonPattern | None, str]:
    return anonymous_pattern(wildurl)  # each rule is met once per stanza it is in force for


def _glob_touches_domain(glob: str, domain: str) -> bool:
    """Whether a host glob names some host under ``domain`` (``ppws.v.com`` or ``*.v.com`` for
    ``v.com``), or the domain itself."""
    core = glob.lstrip("*.")
    return (core == domain or core.endswith("." + domain)
            or host_glob_matches(glob, domain) or host_glob_matches(glob, "x." + domain))


def _anon_finding(state: Replay, rule: AnonRule, stanza: Stanza, kind: Kind, message: str,
                  once: bool = False) -> None:
    key = (rule, "" if once else stanza.id)
    if key not in state.anon_reported:
        state.anon_reported.add(key)
        state.add_at(kind, (rule.file, rule.line), "AnonymousURL", message, stanza.id)


def _unused_anonymous(state: Replay) -> None:
    seen: set[AnonRule] = set()
    for stanza in state.stanzas:
        for rule in stanza.anonymous_rules:
            seen.add(rule)
    for rule in state.anon_rules_all:
        if rule in state.anon_used or rule in state.anon_refused:
            continue
        if not rule.allow:
            message = "an exception to earlier rules; with no rule carried over there is nothing to except"
            state.add_at(Kind.DEFAULT, (rule.file, rule.line), "AnonymousURL", message)
        else:
            where = "the databases after it" if rule in seen else "any database (none follows it)"
            state.add_at(Kind.NO_EQUIVALENT, (rule.file, rule.line), "AnonymousURL",
                         f"{rule.wildurl} matches no host of {where}: not carried over")


def _networks(state: Replay) -> list[Network]:
    live = _live(state)
    networks: list[Network] = []
    by_groups: dict[tuple[str, ...], RangeSet] = {}
    first: dict[tuple[str, ...], Directive] = {}
    for ranges, groups, d in state.autologin:
        by_groups[groups] = by_groups.get(groups, RangeSet()).union(ranges)
        first.setdefault(groups, d)
    for n, (groups, ranges) in enumerate(by_groups.items(), start=1):
        name = f"ezproxy-autologin{'' if n == 1 else f'-{n}'}"
        networks.append(Network(name, tuple(ranges.cidrs()), tuple(sorted(groups))))
        _say(state, Kind.NOTE, first[groups], f"in [[network.library]] {name!r}: machines there read the databases "
             f"licensed to {', '.join(sorted(groups))} without signing in, proxied", None)
        _earlier_open(state, live, first[groups], set(groups))
    # ExcludeIP: each set of ranges gets the groups of the databases it applied to, never more
    # (one network with every group would open vendors the range never applied to).
    groups_by_range: dict[RangeSet, set[str]] = {}
    mixed: list[str] = []
    for stanza in live:
        if stanza.excluded:
            groups_by_range.setdefault(stanza.excluded, set()).update(stanza.groups)
            if stanza.autologin:
                mixed.append(stanza.id)
    excluded_by_groups: dict[tuple[str, ...], RangeSet] = {}
    for ranges, group_set in groups_by_range.items():
        key = tuple(sorted(group_set))
        excluded_by_groups[key] = excluded_by_groups.get(key, RangeSet()).union(ranges)
    if mixed:
        _say(state, Kind.NOTE, state.exclude_lines[0], f"{_some(mixed)} come after both ExcludeIP and AutoLoginIP "
             "lines: they keep on_site = \"proxy\" (one on-site mode per vendor; proxying always works)", None)
    if state.exclude_lines and not excluded_by_groups:
        _say(state, Kind.NOTE, state.exclude_lines[0], "no database follows it (or IncludeIP took every address "
             "back): nothing to carry over", None)
    elif excluded_by_groups:
        names: list[str] = []
        for n, (groups, ranges) in enumerate(excluded_by_groups.items(), start=1):
            name = f"ezproxy-excludeip{'' if n == 1 else f'-{n}'}"
            names.append(f"{name!r} ({', '.join(groups)})")
            networks.append(Network(name, tuple(ranges.cidrs()), groups))
            _earlier_open(state, live, state.exclude_lines[0], set(groups))
        direct = [s.id for s in live if s.excluded and not s.autologin]
        for d in state.exclude_lines:
            where = f"; on_site = \"direct\" (machines there go straight to the vendor) for {_some(direct)}" \
                if direct else ""
            _say(state, Kind.NOTE, d, f"in [[network.library]] {', '.join(names)}{where}", None)
    return networks


def _some(ids: list[str], most: int = 5) -> str:
    return ", ".join(ids[:most]) + ("..." if len(ids) > most else "")


def _earlier_open(state: Replay, live: list[Stanza], d: Directive, groups: set[str]) -> None:
    """Our library networks apply to every vendor their groups license; EZproxy's address lines
    only to the databases after them. Name the earlier ones that the network now also opens."""
    before = state.stanza_at_network[id(d)]
    alive = {id(s) for s in live}
    earlier = [s.id for s in state.stanzas[:before] if id(s) in alive and groups & set(s.groups)]
    if earlier:
        _say(state, Kind.NOTE, d, f"the library network also opens {_some(earlier)} on site without sign-in, "
             "which EZproxy did not (they come before this line)", None)
