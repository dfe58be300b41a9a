"""A plain-language privacy summary generated from the configuration.

``privacy_summary(facts)`` returns ``(heading, paragraph)`` pairs for the patron-facing privacy
page: what the databases receive, what is kept and for how long. Every duration in it comes from
the running configuration, so the page cannot drift from what the proxy actually does. The text
is plain (no markup); the page template escapes and renders it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

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


def _join(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def privacy_summary(facts: PrivacyFacts, log_options: LogOptions | None = None) -> list[tuple[str, str]]:
    """The privacy page's sections, each a heading and one paragraph of plain text."""
    del log_options  # the log's content is the same in every format; kept for the caller's symmetry
    r = facts.records
    sec = r.security
    t = r.threshold
    sections: list[tuple[str, str]] = []

    if facts.pairwise_vendors:
        identifier = (
            f"{_join(list(facts.pairwise_vendors))} offer personal features such as saved searches, so "
            "for them the note also carries a code made for that database alone. It is different for "
            "every database, cannot be turned back into your card number, and is the only identifier "
            "that ever leaves the library."
        )
    else:
        identifier = "No database receives any identifier for you."
    sections.append((
        "What the databases receive",
        f"When you use a database through {facts.library_name}, the database's own site sees the pages "
        "you open and what you type into it, such as your searches. It sees them coming from the "
        "library's internet address, with a signed note saying only that the visitor is a member of "
        f"{facts.scope} entitled to use it under the library's licence. The note is the same for every "
        f"patron, is valid for at most {human_duration(facts.assertion_lifetime)}, and holds no name, "
        "card number or e-mail address. Your own internet address and the library's cookies are removed "
        f"before a request leaves. {identifier}",
    ))

    where = ("in the proxy's memory only, so restarting the proxy also ends them"
             if facts.session_store == "memory"
             else "in the library's session store, never in a file of visits")
    sections.append((
        "While you are signed in",
        "The proxy remembers your session: the groups that decide which databases you may use, your "
        "home library, a coded key instead of your card number, and the cookies the databases set, "
        "which stay on the library's server instead of in your browser. A session ends after "
        f"{human_duration(facts.session_idle)} without use and after {human_duration(facts.session_lifetime)} "
        f"at most; signing out ends it at once. Sessions are kept {where}.",
    ))

    sections.append((
        "Usage statistics",
        "For each database and each day, the proxy counts how many sessions began, how many pages were "
        "requested from home and in the library, how many searches and full-text downloads there were, "
        "and how much data passed through. It does not record who did any of it, which pages or what was "
        f"searched for, or from where. Daily counts are kept for {human_duration(r.detail_retention)} and "
        f"monthly totals for {human_duration(r.monthly_retention)}. In every report, counts from 1 to "
        f"{t - 1} are shown as \"<{t}\", so that nobody can be picked out.",
    ))

    limits = [f"{limit.count} {kind}s per {human_duration(limit.window)}" for kind, limit in sec.usage_limits.items()]
    usage = (
        f" To respect the databases' licence terms, each patron may make at most {_join(limits)}; "
        "these counts are kept in the same coded way."
        if limits else ""
    )
    sections.append((
        "Protection against guessing",
        "To stop people guessing card numbers and PINs, the proxy counts failed sign-ins for each card "
        f"and each connection. After {sec.max_failures} failures within {human_duration(sec.window)}, the "
        "card cannot sign in for a while. The counts are filed under a code made with a secret key that "
        f"is replaced every {human_duration(sec.rotate)} and then thrown away, so after at most "
        f"{human_duration(2 * sec.rotate)} nobody, the library included, can tell which card a count was "
        f"about. None of this is written to disk.{usage}",
    ))

    sections.append((
        "Logs",
        "The proxy's logs record how the service runs: when it started, when a database did not answer, "
        "and similar events. They never contain card numbers, PINs, names, e-mail addresses, internet "
        "addresses, web addresses or searches; anything that looks like one is removed before a line "
        "is written.",
    ))

    sections.append((
        "What is never kept",
        "The proxy keeps no history of the pages you read or the searches you make, no record of your "
        "internet address, and no list of who signed in or when. Records of that kind do not exist, so "
        "they cannot be handed to anyone.",
    ))

    sections.append((
        "Regular purging",
        f"Every {human_duration(r.purge_interval)} the proxy deletes what has passed its keeping time: "
        "old statistics, expired sign-in counts and ended sessions. Deleted statistics are overwritten "
        "in the file, not merely hidden.",
    ))
    return sections
