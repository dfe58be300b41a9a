"""What the proxy holds, in words, generated from the configuration in force.

For the director's retention page and the records-request helper: every store the proxy keeps,
what is in it, how long it is kept, and whether it can link a card to a use. Generated, not
written by hand, so the answer to a records request cannot drift from what the proxy does.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config import Config
from proxy.records.privacy import human_duration


@dataclass(frozen=True)
class Holding:
    name: str
    holds: str
    kept: str
    links_card_to_use: str


def holdings(config: Config, *, needed_hosts_kept: float | None = None) -> list[Holding]:
    r = config.records
    sec = r.security
    store = ("in the proxy's memory only" if config.sessions.store == "memory"
             else "in the session store (Redis), never in a file of visits")
    out = [
        Holding(
            "Usage statistics",
            "per database and per day: sessions begun, pages requested (from home and in the library), "
            "searches, downloads and data volume. No card, name, address, page, search or time of day.",
            f"daily figures {human_duration(r.detail_retention)}, monthly figures "
            f"{human_duration(r.monthly_retention)}",
            "No: counts only.",
        ),
        Holding(
            "Sessions of signed-in patrons",
            "while a patron is signed in: their groups, home library, a coded key made from the card "
            "number with the proxy's secret (not the number), the databases' cookies and which databases "
            f"were opened in that session; kept {store}.",
            f"until sign-out, {human_duration(config.sessions.idle)} without use, or "
            f"{human_duration(config.sessions.lifetime)} at most",
            "Only while the session lasts, and only for someone holding both the card number and the "
            "proxy's secret: they could tell which databases a live session opened (never pages or "
            "searches). Nothing of it remains after the session ends.",
        ),
        Holding(
            "Failed sign-ins and usage limits",
            "counters filed under a keyed hash whose key is made in memory and replaced every "
            f"{human_duration(sec.rotate)}; never written to disk.",
            f"at most {human_duration(2 * sec.rotate)}; a restart forgets them",
            "No record of use. Counts of failed sign-ins (and of downloads, when usage limits are set) "
            "that nobody can trace back to a card once the key is dropped.",
        ),
    ]
    if needed_hosts_kept is not None:
        out.append(Holding(
            "Needed hosts",
            "per database and per day, how often its pages tried to load from a host that is not "
            "configured (the host's name only: no page, no patron, no address).",
            human_duration(needed_hosts_kept),
            "No: counts of host names only.",
        ))
    out += [
        Holding(
            "Service log",
            "how the service runs (starts, errors, a database not answering). Card numbers, names, "
            "addresses, web addresses and searches are removed before a line is written.",
            "as long as the server's own log rotation keeps it (set outside the proxy)",
            "No.",
        ),
        Holding(
            "Staff audit trail",
            "which staff member used which console page or action, and when. No patron data.",
            human_duration(config.staff.audit_retention),
            "No: it is about staff, not patrons.",
        ),
    ]
    if config.patrons.source == "local":
        out.append(Holding(
            "Local patrons file",
            "card numbers, hashed PINs, groups, home library and status of the patrons of the local "
            "source (registration data, as the library's own system holds).",
            "until staff remove an entry",
            "No: it records who may sign in, never when or what they used.",
        ))
    return out


NOT_HELD = (
    "which pages, articles or documents anyone read or downloaded",
    "what anyone searched for",
    "which patron signed in, or when (there is no list of sign-ins)",
    "patrons' internet addresses",
    "names, postal or e-mail addresses, telephone numbers",
    "any history of sessions once they have ended",
)


def statement(config: Config, today: str) -> str:
    """A plain statement for answering a records request about a patron's use of databases."""
    return (
        f"On {today}, the database proxy of {config.library.name} holds no record that links a library "
        "card, a name or an internet address to a database, page, search, download or time of use. "
        "It was designed not to create such records: usage is counted per database and per day without "
        "saying who, failed sign-ins are counted under keys that are thrown away within "
        f"{human_duration(2 * config.records.security.rotate)}, and the state of a signed-in session "
        f"lasts at most {human_duration(config.sessions.lifetime)} and is never kept afterwards. "
        "The proxy therefore has no records responsive to a request for a patron's use of databases "
        "beyond what is listed below."
    )
