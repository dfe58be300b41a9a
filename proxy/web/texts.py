"""Every patron-facing word of the proxy's messages, in one place (to be translated later).

A message page is named by a short reason code, which is also sent in the ``X-Libproxy-Reason``
header (tests and log shippers read it; patrons never see it). ``MESSAGES`` maps each code to
its status, title and text; ``{vendor}``/``{groups}``-style fields are filled by ``Pages``, with
the values escaped by the template like everything else.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    status: int
    title: str
    text: str
    # The label of the "back to the databases" link the page ends with; None: no such link.
    back: str | None = "Back to the databases"
    # The X-Libproxy-Reason sent, when several pages share one (None: the page's own code).
    code: str | None = None


BACK_TO_DATABASES = "Back to the databases"

MESSAGES: dict[str, Message] = {
    # The proxy's own pages and routing
    "not-found": Message(404, "Page not found", "There is no page at this address.", back=None),
    "method": Message(405, "Not allowed", "This page cannot be used that way.", back=None),
    "http-error": Message(400, "Request refused", "The proxy could not use this request.", back=None),
    "malformed-request": Message(400, "Request refused", "Malformed request.", back=None, code="bad-input"),
    "malformed-host": Message(400, "Request refused", "Malformed Host header.", back=None, code="bad-input"),
    "malformed-link": Message(400, "Request refused", "The link you followed is malformed.", back=None,
                              code="bad-input"),
    "form-too-large": Message(413, "Request refused", "The sign-in form was too large.", back=None, code="bad-input"),
    "slow-form": Message(408, "Request refused", "The form took too long to arrive.", back=None, code="bad-input"),
    "not-configured": Message(
        404, "This database is not available through the library",
        "The link you followed points to a site that this library's proxy is not set up for. "
        "If you expected it to work, please tell the library which link you used.",
        back="See the databases your library offers"),
    "not-licensed": Message(
        403, "{vendor} is not included with your card",
        "This database is licensed to holders of a library card from: {groups}. Your card is "
        "not one of them. A card from one of those libraries, or a visit to the library, gives "
        "access.",
        back="See the databases you can use"),
    "signed-out-vendor": Message(
        401, "Please sign in",
        "Your session has ended. Open the database again from the library's list to sign in.",
        back="Databases", code="signed-out"),
    # Sign-in and sign-out
    "cross-site": Message(403, "Request refused", "This form can only be sent from the library's own pages.",
                          back=None),
    "locked": Message(
        429, "Too many attempts",
        "There have been too many unsuccessful sign-ins. Please wait a quarter of an hour and "
        "try again, or contact the library.", back=None),
    "card-expired": Message(403, "Your card cannot be used right now",
                            "Your library card has expired. Please contact your library to renew it.", back=None),
    "card-blocked": Message(403, "Your card cannot be used right now",
                            "Your library card cannot be used for online databases at the moment. "
                            "Please contact your library.", back=None),
    "signed-out": Message(
        200, "You are signed out",
        "You have been signed out of the library's databases. On a shared computer, close the "
        "browser to finish."),
    "signed-out-everywhere": Message(
        200, "You are signed out",
        "You have been signed out of the library's databases. On a shared computer, close the "
        "browser to finish. Your {count} other session(s) on other devices have ended too.",
        code="signed-out"),
    "no-session": Message(200, "You are not signed in", "The proxy holds nothing about you right now.",
                          back="Databases"),
    "ticket-expired": Message(
        400, "This sign-in link has expired",
        "Sign-in links work once and only for a minute. Please open the database again from "
        "the library's list."),
    "ticket-elsewhere": Message(
        400, "Please open the database from the library's list",
        "This sign-in link was made for another browser, so it cannot sign you in here."),
    # Failures of the parts behind the proxy
    "directory-unavailable": Message(
        503, "The library directory is unavailable",
        "The library's patron directory is not answering right now, so new sign-ins cannot "
        "be checked. Please try again in a few minutes. If you are already signed in, you "
        "can keep reading.", back=None),
    "store-unavailable": Message(503, "Temporarily unavailable", "Please try again in a few minutes.", back=None),
    "vendor-timeout": Message(
        504, "The database is not answering",
        "The database's own site did not answer in time. Please try again in a few minutes.", back=None),
    "vendor-unreachable": Message(
        502, "The database cannot be reached",
        "The database's own site could not be reached or sent a broken reply. Please try again later.",
        back=None),
    "internal": Message(500, "Something went wrong", "The proxy hit an unexpected problem. Please try again.",
                        back=None),
    # Forwarding
    "upload-too-large": Message(413, "Upload too large",
                                "The file you tried to send is larger than the library's proxy accepts.", back=None),
    "slow-body": Message(408, "The form took too long to arrive", "Please try again.", back=None),
    "usage-limit": Message(
        429, "Please slow down",
        "You have reached the library's limit for this database for now (licences forbid bulk "
        "downloading). Please try again later.", back=None),
    "busy": Message(
        503, "The database is very busy",
        "Many people are using this database through the library right now. Please try again in a "
        "few seconds.", back=None),
    "busy-client": Message(
        429, "Too many pages at once",
        "Your browser asked for many pages of this database at the same time. Please wait for them "
        "to finish, then try again.", back=None),
    "leaving": Message(
        200, "This link leaves the library's databases",
        "The database sent you to a site that your library does not provide through this proxy. "
        "If you continue, that site will see your own connection rather than the library's.", back=None),
    "bad-websocket": Message(400, "Request refused", "This connection request is malformed.", back=None),
    "websocket-origin": Message(403, "Request refused", "This page may not open that connection.", back=None),
    "websocket-refused": Message(502, "The database refused the connection",
                                 "The database's own site did not accept this connection.", back=None),
}

# Words inside pages other than messages.
LEAVING_CONTINUE = "Continue outside the library's proxy"
FORM_EXPIRED = "Your sign-in form had expired. Please try again."
NOT_RECOGNISED = "That card number and PIN were not recognised. Please try again."
