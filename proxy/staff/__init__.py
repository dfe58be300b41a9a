"""The staff console: IT and the director operate the proxy without touching patron data.

    options.py    the [staff] table (accounts file, session timeouts, audit retention)
    accounts.py   staff accounts: a local file of scrypt-hashed passwords, and ``staff add``
    sessions.py   staff sessions in memory: random ids, idle timeout, a CSRF token each
    audit.py      the audit trail: who did what, when; JSON lines, no patron data, purged
    auth.py       the middleware (session, CSRF, roles), sign-in and sign-out
    render.py     the console's pages: the patron pages' look, no script, no patron footer
    it.py         the ``it`` role: vendors, configuration, health, sign-in locks
    director.py   the ``director`` role: statistics, privacy page, retention, records requests
    facts.py      what the proxy holds, in words, generated from the configuration
    charts.py     statistics charts drawn from printed figures only
    parts.py      optional parts built elsewhere (vendor check, needed hosts, reload)
    console.py    ``mount``: the console on the staff listener's application

Deliberately import-free: ``proxy.config`` imports ``proxy.staff.options``, and this file runs
first; importing the application's parts from here would be a circle.
"""
