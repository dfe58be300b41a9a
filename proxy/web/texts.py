"""Every patron-facing word of the proxy's messages, in one place, in English.

Each text is marked with ``N_`` (gettext's "noop": it is only collected by extraction) and
translated when a page is rendered (``Pages.message``), in the request's language (see
``i18n.py``); the Spanish is in ``locale/es/LC_MESSAGES/messages.po``.

A message page is named by a short reason code, which is also sent in the ``X-Libproxy-Reason``
header (tests and log shippers read it; patrons never see it). ``MESSAGES`` maps each code to
its status, title and text; ``{vendor}``/``{groups}``-style fields are filled by ``Pages``, with
the values escaped by the template like everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.web.i18n import N_, Nn_

# The label of the link most messages end with.
BACK_TO_DATABASES = N_("Back to the databases")


@dataclass(frozen=True, slots=True)
class Message:
    status: int
    title: str
    text: str
    # The label of the "back to the databases" link the page ends with; None: no such link.
    back: str | None = BACK_TO_DATABASES
    # The X-Libproxy-Reason sent, when several pages share one (None: the page's own code).
    code: str | None = None
    # The text when the count it mentions is not 1 (``{count}`` in it): for ngettext.
    plural: str | None = None


MESSAGES: dict[str, Message] = {
    # The proxy's own pages and routing
    "not-found": Message(404, N_("Page not found"), N_("There is no page at this address."), back=None),
    "method": Message(405, N_("Not allowed"), N_("This page cannot be used that way."), back=None),
    "http-error": Message(400, N_("Request refused"), N_("The proxy could not use this request."), back=None),
    "malformed-request": Message(400, N_("Request refused"), N_("This request is malformed."),
                                 back=None, code="bad-input"),
    "http-version": Message(505, N_("Request refused"), N_("Only HTTP/1.0 and HTTP/1.1 requests are served here."),
                            back=None, code="bad-input"),
    "malformed-host": Message(400, N_("Request refused"), N_("The address in this request is malformed."),
                              back=None, code="bad-input"),
    "malformed-link": Message(400, N_("Request refused"), N_("The link you followed is malformed."), back=None,
                              code="bad-input"),
    "form-too-large": Message(413, N_("Request refused"), N_("The sign-in form was too large."),
                              back=None, code="bad-input"),
    "slow-form": Message(408, N_("Request refused"), N_("The form took too long to arrive."),
                         back=None, code="bad-input"),
    "not-configured": Message(
        404, N_("This database is not available through the library"),
        N_("The link you followed points to a site that this library's proxy is not set up for. "
        "If you expected it to work, please tell the library which link you used."),
        back=N_("See the databases your library offers")),
    "not-licensed": Message(
        403, N_("{vendor} is not included with your card"),
        N_("This database is licensed to holders of a library card from: {groups}. Your card is "
        "not one of them. A card from one of those libraries, or a visit to the library, gives "
        "access."),
        back=N_("See the databases you can use")),
    "signed-out-vendor": Message(
        401, N_("Please sign in"),
        N_("Your session has ended. Open the database again from the library's list to sign in."),
        back=N_("Databases"), code="signed-out"),
    # Sign-in and sign-out
    "cross-site": Message(403, N_("Request refused"), N_("This form can only be sent from the library's own pages."),
                          back=None),
    "locked": Message(
        429, N_("Too many attempts"),
        N_("There have been too many unsuccessful sign-ins. Please wait a quarter of an hour and "
        "try again, or contact the library.")),
    "card-expired": Message(403, N_("Your card cannot be used right now"),
                            N_("Your library card has expired. Please contact your library to renew it."), back=None),
    "card-blocked": Message(403, N_("Your card cannot be used right now"),
                            N_("Your library card cannot be used for online databases at the moment. "
                            "Please contact your library."), back=None),
    "signed-out": Message(
        200, N_("You are signed out"),
        N_("You have been signed out of the library's databases. On a shared computer, close the "
        "browser to finish.")),
    "signed-out-everywhere": Message(
        200, N_("You are signed out"),
        **Nn_("You have been signed out of the library's databases. On a shared computer, close the "
              "browser to finish. Your other session on another device has ended too.",
              "You have been signed out of the library's databases. On a shared computer, close the "
              "browser to finish. Your {count} other sessions on other devices have ended too."),
        code="signed-out"),
    "no-session": Message(200, N_("You are not signed in"), N_("The proxy holds nothing about you right now."),
                          back=N_("Databases")),
    "ticket-expired": Message(
        400, N_("This sign-in link has expired"),
        N_("Sign-in links work once and only for a minute. Please open the database again from "
        "the library's list.")),
    "ticket-elsewhere": Message(
        400, N_("Please open the database from the library's list"),
        N_("This sign-in link was made for another browser, so it cannot sign you in here.")),
    # Failures of the parts behind the proxy
    "directory-unavailable": Message(
        503, N_("The library directory is unavailable"),
        N_("The library's patron directory is not answering right now, so new sign-ins cannot "
        "be checked. Please try again in a few minutes. If you are already signed in, you "
        "can keep reading."), back=None),
    "store-unavailable": Message(503, N_("Temporarily unavailable"), N_("Please try again in a few minutes."),
                                 back=None),
    "vendor-timeout": Message(
        504, N_("The database is not answering"),
        N_("The database's own site did not answer in time. Please try again in a few minutes."), back=None),
    "vendor-unreachable": Message(
        502, N_("The database cannot be reached"),
        N_("The database's own site could not be reached or sent a broken reply. Please try again later."),
        back=None),
    "internal": Message(500, N_("Something went wrong"), N_("The proxy hit an unexpected problem. Please try again."),
                        back=None),
    # Forwarding
    "upload-too-large": Message(413, N_("Upload too large"),
                                N_("The file you tried to send is larger than the library's proxy accepts."),
                                back=None),
    "slow-body": Message(408, N_("The form took too long to arrive"), N_("Please try again."), back=None),
    "usage-limit": Message(
        429, N_("Please slow down"),
        N_("You have reached the library's limit for this database for now (licences forbid bulk "
        "downloading). Please try again later.")),
    "busy": Message(
        503, N_("The database is very busy"),
        N_("Many people are using this database through the library right now. Please try again in a "
        "few seconds."), back=None),
    "busy-client": Message(
        429, N_("Too many pages at once"),
        N_("Your browser asked for many pages of this database at the same time. Please wait for them "
        "to finish, then try again.")),
    "leaving": Message(
        200, N_("This link leaves the library's databases"),
        N_("The database sent you to a site that your library does not provide through this proxy. "
        "If you continue, that site will see your own connection rather than the library's."), back=None),
    "bad-websocket": Message(400, N_("Request refused"), N_("This connection request is malformed."), back=None),
    "websocket-origin": Message(403, N_("Request refused"), N_("This page may not open that connection."), back=None),
    "websocket-refused": Message(502, N_("The database refused the connection"),
                                 N_("The database's own site did not accept this connection."), back=None),
}

# Words inside pages other than messages.
LEAVING_CONTINUE = N_("Continue outside the library's proxy")
FORM_EXPIRED = N_("Your sign-in form had expired. Please try again.")
NOT_RECOGNISED = N_("That card number and PIN were not recognised. Please try again.")
