"""A plain-language privacy summary generated from the configuration.

``privacy_summary(facts)`` returns ``(heading, paragraph)`` pairs for the patron-facing privacy
page: what the databases receive, what is kept and for how long. Every duration in it comes from
the running configuration, so the page cannot drift from what the proxy actually does. The text
is plain (no markup); the page template escapes and renders it. The words go through a gettext
catalogue given by the caller (the patron page passes the request's language; the msgids are
extracted from this file with the pages' own, see docs/patron-pages.md).
"""

from __future__ import annotations

import gettext
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from babel.numbers import format_decimal

from proxy.records.options import RecordsOptions

if TYPE_CHECKING:
    from proxy.config import Config
    from proxy.records.logsetup import LogOptions

_UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


@dataclass(frozen=True)
class PrivacyFacts:
    """What the summary is made from. ``pairwise_vendors`` are the titles of vendors that opted
    in to a pairwise identifier (empty until that feature is configured)."""

    library_name: str
    scope: str
    assertion_lifetime: float
    session_idle: float
    session_lifetime: float
    session_store: str
    records: RecordsOptions
    pairwise_vendors: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Config, records: RecordsOptions, *,
                    pairwise_vendors: Sequence[str] = ()) -> PrivacyFacts:
        return cls(
            library_name=config.library.name,
            scope=config.library.scope,
            assertion_lifetime=config.assertion.lifetime,
            session_idle=config.sessions.idle,
            session_lifetime=config.sessions.lifetime,
            session_store=config.sessions.store,
            records=records,
            pairwise_vendors=tuple(pairwise_vendors),
        )


def human_duration(seconds: float) -> str:
    """``90 days``, ``2 hours``, ``15 minutes``; long spans also in years."""
    whole = max(round(seconds), 1)
    for size, name in _UNITS:
        if whole % size == 0:
            count = whole // size
            text = f"{count} {name}{'' if count == 1 else 's'}"
            if name == "day" and count >= 730:
                text += f" (about {round(count / 365.25)} years)"
            return text
    raise AssertionError("unreachable")  # pragma: no cover


class _Translate(Protocol):
    def gettext(self, message: str, /) -> str: ...
    def ngettext(self, singular: str, plural: str, n: int, /) -> str: ...


class _Words:
    """The summary's words in one language: texts through its catalogue, numbers in its style."""

    def __init__(self, translate: _Translate, language: str) -> None:
        self.gettext = translate.gettext
        self.ngettext = translate.ngettext
        self.language = language

    def number(self, value: int) -> str:
        return format_decimal(value, locale=self.language)

    def count(self, singular: str, plural: str, n: int) -> str:
        return self.ngettext(singular, plural, n).format(count=self.number(n))

    def duration(self, seconds: float) -> str:
        """"5 minutes", "2 hours", "90 days", "2 years", "1,100 days (about 3 years)"."""
        _n = self.count
        whole = max(round(seconds), 1)
        if whole % 86400 == 0:
            days = whole // 86400
            if days % 365 == 0:
                return _n("{count} year", "{count} years", days // 365)
            text = _n("{count} day", "{count} days", days)
            if days >= 730:
                text = self.gettext("{duration} (about {years} years)").format(
                    duration=text, years=self.number(round(days / 365.25)))
            return text
        if whole % 3600 == 0:
            return _n("{count} hour", "{count} hours", whole // 3600)
        if whole % 60 == 0:
            return _n("{count} minute", "{count} minutes", whole // 60)
        return _n("{count} second", "{count} seconds", whole)

    def every(self, seconds: float) -> str:
        """"every day", "every 2 hours": a period, never "every 1 day"."""
        _n = self.count
        whole = max(round(seconds), 1)
        if whole % 86400 == 0:
            return _n("every day", "every {count} days", whole // 86400)
        if whole % 3600 == 0:
            return _n("every hour", "every {count} hours", whole // 3600)
        if whole % 60 == 0:
            return _n("every minute", "every {count} minutes", whole // 60)
        return _n("every second", "every {count} seconds", whole)

    def join(self, items: Sequence[str]) -> str:
        if len(items) <= 1:
            return "".join(items)
        return self.gettext("{items} and {last}").format(items=", ".join(items[:-1]), last=items[-1])


def _limit(words: _Words, kind: str, count: int, window: float) -> str:
    """"100 downloads every hour" (the counted kinds are those of records/security.py)."""
    _n = words.count
    things = {
        "download": _n("{count} download", "{count} downloads", count),
        "search": _n("{count} search", "{count} searches", count),
        "request": _n("{count} page", "{count} pages", count),
    }.get(kind, f"{words.number(count)} × {kind}")
    return words.gettext("{things} {every}").format(things=things, every=words.every(window))


def privacy_summary(facts: PrivacyFacts, log_options: LogOptions | None = None, *,
                    translate: _Translate | None = None, language: str = "en",
                    library_name: str | None = None) -> list[tuple[str, str]]:
    """The privacy page's sections, each a heading and one paragraph of plain text, in the
    language of ``translate`` (a gettext catalogue; English without one). ``library_name``
    replaces the configured name (the library's name in that language)."""
    del log_options  # the log's content is the same in every format; kept for the caller's symmetry
    words = _Words(translate or gettext.NullTranslations(), language)
    _, _n = words.gettext, words.count
    r = facts.records
    sec = r.security
    t = r.threshold
    name = library_name or facts.library_name
    sections: list[tuple[str, str]] = []

    if facts.pairwise_vendors:
        identifier = words.ngettext(
            "{vendors} offers personal features such as saved searches, so for it the note also carries "
            "a code made for that database alone. It cannot be turned back into your card number, and "
            "is the only identifier that ever leaves the library.",
            "{vendors} offer personal features such as saved searches, so for them the note also carries "
            "a code made for that database alone. It is different for every database, cannot be turned "
            "back into your card number, and is the only identifier that ever leaves the library.",
            len(facts.pairwise_vendors)).format(vendors=words.join(list(facts.pairwise_vendors)))
    else:
        identifier = _("No database receives any identifier for you.")
    sections.append((_("What the databases receive"), _(
        "When you use a database through {library}, the database's own site sees the pages you open "
        "and what you type into it, such as your searches. It sees them coming from the library's "
        "internet address, with a signed note saying only that the visitor is a member of {scope} "
        "entitled to use it under the library's licence. The note is the same for every patron, is "
        "valid for at most {lifetime}, and holds no name, card number or e-mail address. Your own "
        "internet address and the library's cookies are removed before a request leaves. {identifier}"
    ).format(library=name, scope=facts.scope, lifetime=words.duration(facts.assertion_lifetime),
             identifier=identifier)))

    where = (_("in the proxy's memory only, so restarting the proxy also ends them")
             if facts.session_store == "memory"
             else _("in the library's session store, never in a file of visits"))
    sections.append((_("While you are signed in"), _(
        "The proxy remembers your session: the groups that decide which databases you may use, your "
        "home library, a coded key instead of your card number, and the cookies the databases set, "
        "which stay on the library's server instead of in your browser. A session ends after {idle} "
        "without use and after {lifetime} at most; signing out ends it at once. Sessions are kept "
        "{where}."
    ).format(idle=words.duration(facts.session_idle), lifetime=words.duration(facts.session_lifetime),
             where=where)))

    sections.append((_("Usage statistics"), _(
        "For each database and each day, the proxy counts how many sessions began, how many pages were "
        "requested from home and in the library, how many searches and full-text downloads there were, "
        "and how much data passed through. It does not record who did any of it, which pages or what "
        "was searched for, or from where. Daily counts are kept for {daily} and monthly totals for "
        "{monthly}. In every report, counts from 1 to {below} are shown as \"<{threshold}\", so that "
        "nobody can be picked out."
    ).format(daily=words.duration(r.detail_retention), monthly=words.duration(r.monthly_retention),
             below=words.number(t - 1), threshold=words.number(t))))

    limits = [_limit(words, kind, limit.count, limit.window) for kind, limit in sec.usage_limits.items()]
    usage = (" " + _("To respect the databases' licence terms, each patron may make at most {limits}; "
                     "these counts are kept in the same coded way.").format(limits=words.join(limits))
             if limits else "")
    sections.append((_("Protection against guessing"), _(
        "To stop people guessing card numbers and PINs, the proxy counts failed sign-ins for each card "
        "and each connection. After {failures} within {window}, the card cannot sign in for a while. "
        "The counts are filed under a code made with a secret key that is replaced {every} and then "
        "thrown away, so after at most {forgotten} nobody, the library included, can tell which card a "
        "count was about. None of this is written to disk."
    ).format(failures=_n("{count} failure", "{count} failures", sec.max_failures),
             window=words.duration(sec.window), every=words.every(sec.rotate),
             forgotten=words.duration(2 * sec.rotate)) + usage))

    sections.append((_("Logs"), _(
        "The proxy's logs record how the service runs: when it started, when a database did not answer, "
        "and similar events. They never contain card numbers, PINs, names, e-mail addresses, internet "
        "addresses, web addresses or searches; anything that looks like one is removed before a line "
        "is written.")))

    sections.append((_("What is never kept"), _(
        "The proxy keeps no history of the pages you read or the searches you make, no record of your "
        "internet address, and no list of who signed in or when. Records of that kind do not exist, so "
        "they cannot be handed to anyone.")))

    sections.append((_("Regular purging"), _(
        "The proxy deletes what has passed its keeping time {every}: old statistics, expired sign-in "
        "counts and ended sessions. Deleted statistics are overwritten in the file, not merely hidden."
    ).format(every=words.every(r.purge_interval))))
    return sections
