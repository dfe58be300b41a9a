"""The rules that need every stanza at once, applied after the reading (``convert.replay``).

In this order, because each works on what the one before left:

1. A stanza with no URL is not imported (EZproxy needs one; the proxy needs a starting point).
2. ``NeverProxy`` takes matching hosts out of every stanza. A NeverProxy host under a stanza's
   Domain cannot be taken out (our domains have no exceptions): reported.
3. Duplicates: EZproxy gives a host to the first database that lists it, and the proxy refuses
   a host in two vendors, so later stanzas lose it (reported, naming the keeper). A stanza whose
   starting point's host went to an earlier one is not imported: its links already work through
   the earlier vendor.
4. AnonymousURL rules become ``anonymous_paths``, only where that opens no more than EZproxy
   did: anonymous paths apply to every host of a vendor, so a rule naming one host of several
   is refused (those requests keep needing sign-in) and reported.
5. ``AutoLoginIP`` and ``ExcludeIP`` become ``[[network.library]]`` entries; stanzas that
   EZproxy sent straight to the vendor from an excluded address get ``on_site = "direct"``.
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from dataclasses import dataclass

from proxy.ezproxy.convert import AnonRule, Replay, Stanza
from proxy.ezproxy.iprange import RangeSet
from proxy.ezproxy.parser import Directive
from proxy.ezproxy.report import Finding, Kind
from proxy.ezproxy.urls import anonymous_pattern, host_glob_matches
from proxy.vendors import Origin


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


def _never_proxy(state: Replay) -> None:
    # Index hosts once: a config.txt has thousands of hosts and hundreds of NeverProxy lines.
    by_host: dict[str, list[Stanza]] = defaultdict(list)
    for stanza in _live(state):
        for host in dict.fromkeys(o.host for o in stanza.origins):
            by_host[host].append(stanza)
    for d in state.never_proxy:
        spec = d.args.strip().lower()
        spec = spec.split("://", 1)[1] if "://" in spec else spec
        glob, _, port_text = spec.split("/", 1)[0].partition(":")
        port = int(port_text) if port_text.isdigit() else None
        if not glob:
            _say(state, Kind.ERROR, d, "names no host: ignored", None)
            continue
        if any(ch in glob for ch in "*?["):
            pattern = re.compile(fnmatch.translate(glob))
            hosts = [h for h in by_host if pattern.fullmatch(h)]
        else:
            hosts = [glob] if glob in by_host else []
        touched = False
        for stanza in dict.fromkeys(s for h in hosts for s in by_host[h] if not s.dropped):
            touched = True
            _leave_out(state, d, stanza, set(hosts), port)
        probe = glob.lstrip("*.") or glob
        for stanza in _live(state):
            for domain in stanza.domains:
                if probe == domain or probe.endswith("." + domain):
                    touched = True
                    _say(state, Kind.NO_EQUIVALENT, d, f"{glob} lies under the domain {domain}, which the proxy "
                         "serves as a whole: it will be proxied. List this vendor's hosts instead of the domain if it "
                         "must not be", stanza)
        if not touched:
            _say(state, Kind.DEFAULT, d, "hosts in no vendor entry are never proxied", None)


def _leave_out(state: Replay, d: Directive, stanza: Stanza, hosts: set[str], port: int | None) -> None:
    removed = [o for o in stanza.origins if o.host in hosts and (port is None or o.port == port)]
    if not removed:
        return
    stanza.origins = [o for o in stanza.origins if o not in removed]
    if stanza.start_origin in removed:
        stanza.dropped = "its starting point's host is NeverProxy"
        _say(state, Kind.NO_EQUIVALENT, d, f"the starting point {stanza.start!r} of {stanza.title!r} is on a "
             "NeverProxy host (EZproxy sends patrons there directly): not imported; list it as a plain link on the "
             "library's site instead", stanza)
    else:
        _say(state, Kind.NOTE, d, f"{', '.join(sorted({o.url for o in removed}))} left out of this vendor: EZproxy "
             "never proxies it, and links to it will lead straight to the vendor", stanza)


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
    later stanza only what no earlier one matches makes both choose the same vendor."""
    host_owner: dict[Origin, Stanza] = {}
    domain_owner: dict[str, Stanza] = {}
    by_id = {s.id: s for s in state.stanzas}
    for stanza in _live(state):
        start = stanza.start_origin
        keeper_id = _owner_of(start, host_owner, domain_owner) if start is not None else None
        if keeper_id is not None:
            keeper = by_id[keeper_id]
            stanza.dropped = f"its starting point's host belongs to {keeper_id!r}"
            state.add_at(Kind.DUPLICATE, stanza.where, "Title", f"{stanza.title!r} starts at {stanza.start!r}, a host "
                         f"that {keeper_id!r} ({keeper.file}:{keeper.line}) already matches; EZproxy gives it to the "
                         f"first database, so this one is not imported: its links work through {keeper_id!r}",
                         stanza.id)
            continue
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
        for origin in kept:
            host_owner[origin] = stanza
        for domain in kept_domains:
            domain_owner[domain] = stanza
        for owner_id, items in lost.items():
            owner = by_id[owner_id]
            state.add_at(Kind.DUPLICATE, stanza.where, "Title", f"{', '.join(items)} already matched by "
                         f"{owner_id!r} ({owner.file}:{owner.line}), which keeps them (EZproxy's first database "
                         "wins): left out here", stanza.id)


def _anonymous(state: Replay, stanza: Stanza) -> None:
    rules = stanza.anonymous_rules
    exceptions = [r for r in rules if not r.allow]
    hosts = sorted({o.host for o in stanza.origins})
    for rule in rules:
        if not rule.allow:
            continue
        pattern, problem = anonymous_pattern(rule.wildurl)
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
            others = [h for h in hosts if not host_glob_matches(pattern.host_glob, h)]
            others += [f"*.{d}" for d in stanza.domains if not host_glob_matches(pattern.host_glob, "x." + d)]
            others += [d for d in stanza.domains if not host_glob_matches(pattern.host_glob, d)]
            if others:
                refusal = (f"names {pattern.host_glob} only, but anonymous paths apply to every host of the vendor "
                           f"(also {', '.join(others[:3])}{'...' if len(others) > 3 else ''})")
        if refusal or pattern is None:
            _anon_finding(state, rule, stanza, Kind.NO_EQUIVALENT, f"{refusal}: not carried over; those requests "
                          "need sign-in")
            continue
        if pattern.path_glob not in stanza.anonymous_paths:
            stanza.anonymous_paths.append(pattern.path_glob)
        case = "" if rule.case_sensitive else " (matched case-sensitively here)"
        _anon_finding(state, rule, stanza, Kind.NOTE, f"anonymous_paths {pattern.path_glob!r}{case}: these requests "
                      "need no sign-in and carry no membership assertion")


def _glob_touches_domain(glob: str, domain: str) -> bool:
    """Whether a host glob names some host under ``domain`` (``ppws.v.com`` or ``*.v.com`` for
    ``v.com``), or the domain itself."""
    core = glob.lstrip("*.")
    return (core == domain or core.endswith("." + domain)
            or host_glob_matches(glob, domain) or host_glob_matches(glob, "x." + domain))


def _anon_finding(state: Replay, rule: AnonRule, stanza: Stanza, kind: Kind, message: str) -> None:
    key = (rule, stanza.id)
    if key not in state.anon_reported:
        state.anon_reported.add(key)
        state.add_at(kind, (rule.file, rule.line), "AnonymousURL", message, stanza.id)


def _unused_anonymous(state: Replay) -> None:
    seen: set[AnonRule] = set()
    for stanza in state.stanzas:
        for rule in stanza.anonymous_rules:
            seen.add(rule)
    for rule in state.anon_rules_all:
        if rule in state.anon_used:
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
    excluded = RangeSet()
    excluded_groups: set[str] = set()
    mixed: list[str] = []
    for stanza in live:
        if stanza.excluded:
            excluded = excluded.union(stanza.excluded)
            if not stanza.autologin:
                excluded_groups.update(stanza.groups)
            else:
                mixed.append(stanza.id)
    if mixed:
        _say(state, Kind.NOTE, state.exclude_lines[0], f"{_some(mixed)} come after both ExcludeIP and AutoLoginIP "
             "lines: they keep on_site = \"proxy\" (one on-site mode per vendor; proxying always works)", None)
    if state.exclude_lines and not excluded:
        _say(state, Kind.NOTE, state.exclude_lines[0], "no database follows it (or IncludeIP took every address "
             "back): nothing to carry over", None)
    elif excluded:
        groups = tuple(sorted(excluded_groups or {g for s in live for g in s.groups}))
        networks.append(Network("ezproxy-excludeip", tuple(excluded.cidrs()), groups))
        direct = [s.id for s in live if s.excluded and not s.autologin]
        for d in state.exclude_lines:
            where = f"; on_site = \"direct\" (machines there go straight to the vendor) for {_some(direct)}" \
                if direct else ""
            _say(state, Kind.NOTE, d, f"in [[network.library]] \"ezproxy-excludeip\"{where}", None)
        _earlier_open(state, live, state.exclude_lines[0], set(groups))
    return networks


def _some(ids: list[str], most: int = 5) -> str:
    return ", ".join(ids[:most]) + ("..." if len(ids) > most else "")


def _earlier_open(state: Replay, live: list[Stanza], d: Directive, groups: set[str]) -> None:
    """Our library networks apply to every vendor their groups license; EZproxy's address lines
    only to the databases after them. Name the earlier ones that the network now also opens."""
    before = state.stanza_at_network[id(d)]
    earlier = [s.id for s in state.stanzas[:before] if s in live and groups & set(s.groups)]
    if earlier:
        _say(state, Kind.NOTE, d, f"the library network also opens {_some(earlier)} on site without sign-in, "
             "which EZproxy did not (they come before this line)", None)
