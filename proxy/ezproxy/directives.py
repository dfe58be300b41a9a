"""The EZproxy directives this importer knows: names, short forms, and what becomes of each.

Directives that map into the vendor TOML are handled by ``convert.py`` (``MAPPED``). Every other
known directive has an entry in ``FIXED``: the kind of finding it always produces and the
reason, phrased for the library's IT staff. A directive in neither is reported as unknown.
Privacy-relevant directives whose verdict depends on their arguments (``LogFormat`` with ``%u``,
``Audit`` with events) are decided in ``convert.py``.
"""

from __future__ import annotations

from proxy.ezproxy.report import Kind

# Short forms OCLC documents, and the canonical spelling of every directive name we know.
ABBREVIATIONS: dict[str, str] = {
    "t": "Title", "u": "URL", "h": "Host", "hj": "HostJavaScript", "d": "Domain", "dj": "DomainJavaScript",
    "phe": "ProxyHostnameEdit", "a": "AutoLoginIP", "e": "ExcludeIP", "i": "IncludeIP", "n": "Name",
}

# Directives convert.py maps (or whose verdict depends on their arguments or position).
MAPPED = (
    "Title", "URL", "Host", "HostJavaScript", "Domain", "DomainJavaScript", "Description", "NeverProxy",
    "AnonymousURL", "Find", "Replace", "Group", "IncludeFile", "AutoLoginIP", "ExcludeIP", "IncludeIP",
    "AddUserHeader", "LogFormat", "LogSPU", "Audit", "MimeFilter", "HTTPHeader", "Option",
)

# Directives that belong to the database definition they appear in (findings name its vendor).
STANZA_SCOPED = frozenset({
    "Title", "URL", "Host", "HostJavaScript", "Domain", "DomainJavaScript", "Description", "Find", "Replace",
    "HTTPHeader", "Cookie", "FormVariable", "FormSelect", "FormSubmit", "ByteServe", "MimeFilter", "RedirectSafe",
    "Books24x7Site", "ebrarySite", "EBLSecret", "OverDriveSite", "TokenKey", "TokenSignatureKey", "SSO",
})

def _privacy(reason: str) -> tuple[Kind, str]:
    return Kind.PRIVACY, reason


def _default(reason: str) -> tuple[Kind, str]:
    return Kind.DEFAULT, reason


def _none(reason: str) -> tuple[Kind, str]:
    return Kind.NO_EQUIVALENT, reason


_HOSTNAMES = "the proxy serves each vendor host as one DNS label under its own host (one wildcard certificate)"
_SSO = "vendor single sign-on that hands the vendor a per-patron identity (user name, card, or a token from them)"
_JAR = "vendor cookies are always kept server-side, in a jar per patron session and vendor"
_REWRITE = "vendor host names are rewritten wherever they appear in text bodies"
_TLS = "TLS 1.2 or newer with the Python ssl module's modern defaults"
_CHARSET = "text bodies are decoded by their declared charset before host names are rewritten"
_REDIRECT = "redirects to configured hosts are mapped; others get a \"leaving\" page"
_SIGN_INS = "failed sign-ins are limited per card under rotating keyed hashes ([records.security])"
_TIMEOUTS = "timeouts are [upstream] connect_timeout and read_timeout"
_NO_VIA = "the proxy adds no Via or proxy-identifying headers"
_FORMS = "form logins are not supported"

FIXED: dict[str, tuple[Kind, str]] = {
    # Privacy: identities, per-user tokens and addresses (decided by the name alone).
    "Identifier": _privacy("a pseudonymous per-patron identifier for vendors"),
    "SSO": _privacy(_SSO),
    "TokenKey": _privacy("per-patron tokens (^B in URLs) that let a vendor tell patrons apart"),
    "TokenSignatureKey": _privacy("signs per-patron tokens (^B in URLs) that let a vendor tell patrons apart"),
    "Books24x7Site": _privacy(_SSO),
    "ebrarySite": _privacy(_SSO),
    "EBLSecret": _privacy(_SSO),
    "OverDriveSite": _privacy(_SSO + "; OverDrive receives the patron's card number"),
    "Option LogUser": _privacy("writes user names into the log"),
    "Option LogSession": _privacy("writes session identifiers into the log, linking a patron's requests"),
    "Option LogReferer": _privacy("writes the referring page's URL into the log"),
    "Option LogSAML": _privacy("writes SAML assertions (patron attributes) into the log"),
    "Option X-Forwarded-For": _privacy("sends the patron's IP address to vendors in X-Forwarded-For"),
    # Handled by the proxy by default.
    "Option NoX-Forwarded-For": _default("the patron's address is never sent (X-Forwarded-For is not allow-listed)"),
    "Option Cookie": _default(_JAR),
    "Option DomainCookieOnly": _default(_JAR),
    "Option NoCookie": _default(_JAR + "; the browser holds only the proxy's own cookies"),
    "Option NoCookiePassThrough": _default("cookie pass-through is off unless a vendor sets cookie_passthrough"),
    "ProxyHostnameEdit": _default(_HOSTNAMES + "; long names get a short alias automatically"),
    "Option HttpsHyphens": _default(_HOSTNAMES),
    "Option NoHttpsHyphens": _default(_HOSTNAMES),
    "Option ProxyByHostname": _default("the proxy always proxies by host name"),
    "MaxVirtualHosts": _default("there is no limit on proxied host names"),
    "ByteServe": _default("Range requests (PDF pages, media) are forwarded: Range is on the header allow-list"),
    "HTTPMethod": _default("every HTTP method the patron's browser uses is forwarded to configured hosts"),
    "Option MetaEZproxyRewriting": _default(_REWRITE),
    "Option NoMetaEZproxyRewriting": _default(_REWRITE),
    "Option HideEZproxy": _default(_NO_VIA),
    "Option NoHideEZproxy": _default(_NO_VIA),
    "Option AllowSendGZip": _default("compressed responses are decoded under a size cap, rewritten, re-compressed"),
    "Option UTF16": _default(_CHARSET),
    "Option NoUTF16": _default(_CHARSET),
    "Option RedirectPatch": _default(_REDIRECT),
    "Option NoRedirectPatch": _default(_REDIRECT),
    "LogFile": _default("the proxy keeps no per-request log; usage is counted per vendor and day (libproxy stats)"),
    "AuditPurge": _default("retention is set in [records] (detail_retention, monthly_retention)"),
    "IntruderIPAttempts": _default(_SIGN_INS + "; no addresses are kept"),
    "IntruderUserAttempts": _default(_SIGN_INS),
    "IntruderLog": _default(_SIGN_INS + ", never logged with addresses"),
    "SSLCipherSuite": _default(_TLS),
    "SSLHonorCipherOrder": _default(_TLS),
    "SSLOpenSSLConfCmd": _default(_TLS),
    "Option DisableSSLv2": _default(_TLS),
    "Option DisableSSL40bit": _default(_TLS),
    "Option IgnoreWildcardCertificate": _default("vendor certificates are always verified"),
    "Option AnyDNSHostname": _default("only configured vendor hosts are ever contacted"),
    "Option BlockCountryChange": _default("the proxy keeps no client addresses, so it has no country to compare"),
    # Settings of the proxy itself: where they go in our configuration.
    "Name": _none("the proxy's public name is [proxy] host (with a wildcard DNS record and certificate)"),
    "LoginPort": _none("set [proxy] listen"),
    "LoginPortSSL": _none("set [proxy] listen and tls_cert/tls_key, or scheme = \"https\" behind a TLS terminator"),
    "FirstPort": _none("the proxy serves every vendor on its one port, by host name"),
    "Interface": _none("set [proxy] listen"),
    "Option ForceHTTPSLogin": _none("set [proxy] scheme = \"https\" (or tls_cert/tls_key)"),
    "Option ForceHTTPSAdmin": _none("the staff pages are on the separate [admin] listener"),
    "Option AcceptX-Forwarded-For": _none("list your load balancers in [network] trusted_proxies"),
    "MaxLifetime": _none("set [sessions] idle and lifetime"),
    "MaxSessions": _none("set [sessions] max_sessions"),
    "ClientTimeout": _none(_TIMEOUTS),
    "RemoteTimeout": _none(_TIMEOUTS),
    "BinaryTimeout": _none(_TIMEOUTS),
    "UsageLimit": _none("set [records.security] usage_limits (kept under rotating keyed hashes)"),
    "LBPeer": _none("several proxy instances share sessions with [sessions] store = \"redis\""),
    "MessagesFile": _none("the proxy logs to standard error ([logging])"),
    "PidFile": _none("run the proxy under systemd or a container; it writes no pid file"),
    "LoginCookieName": _none("the proxy's session cookies are host-only and named by the proxy"),
    "LoginCookieDomain": _none("the proxy never sets a session cookie for the parent domain"),
    "RejectIP": _none("block addresses in the firewall or load balancer in front of the proxy"),
    "Option ExcludeIPMenu": _none("every patron sees the same /databases page"),
    "Option MenuByGroups": _none("/databases lists every vendor and says which need another card"),
    "Option LoginReplaceGroups": _none("groups come from the patron directory at each sign-in"),
    # Per-database behaviour the proxy does not have.
    "Cookie": _none("the proxy sets no fixed cookies for vendors; their own cookies are kept per session"),
    "CookieFilter": _none("vendor cookies are kept server-side; there is nothing to filter in the browser"),
    "FormVariable": _none(_FORMS + " (a shared vendor account); ask the vendor for IP or assertion-based access, "
                          "and do not copy the password anywhere"),
    "FormSelect": _none(_FORMS),
    "FormSubmit": _none(_FORMS),
    "RedirectSafe": _none("a link to an unconfigured host gets a clear \"not configured\" or \"leaving\" page; "
                          "add the host to a vendor if patrons must reach it through the proxy"),
    "DenyIfRequestHeader": _none("the proxy has no per-header deny rules"),
    "MetaFind": _none("federated search is not part of the proxy"),
    "EncryptVar": _none("URL variable encryption is not supported"),
    "AllowVars": _none("URL variables are not supported"),
    "ExtraLoginCookie": _none("the proxy sets no extra login cookies"),
    "ShibbolethDisable": _none("Shibboleth/SAML vendor access is replaced by the signed membership assertion"),
    "Option ebraryUnencodedTokens": _none("belongs to ebrary single sign-on, which is not carried over"),
    "Option I choose to use Domain lines that threaten the security of my network":
        _none("the proxy refuses top-level domains and never contacts private addresses"),
}

# Option names, for case-insensitive matching ("Option cookiepassthrough").
_OPTIONS: dict[str, str] = {
    name.split(" ", 1)[1].lower(): name.split(" ", 1)[1]
    for name in (*FIXED, "Option CookiePassThrough")
    if name.startswith("Option ")
}

_KNOWN: dict[str, str] = {
    **{name.lower(): name for name in (*MAPPED, *FIXED) if not name.startswith("Option ")},
    **ABBREVIATIONS,
}


def is_known(raw_name: str) -> bool:
    return raw_name.lower() in _KNOWN


def canonical_name(raw_name: str, args: str) -> tuple[str, str]:
    """The canonical directive name and the remaining arguments. ``Option`` directives are named
    with their option ("Option CookiePassThrough"), case-corrected when the option is known."""
    name = _KNOWN.get(raw_name.lower(), raw_name)
    if name != "Option":
        return name, args
    option, _, rest = args.partition(" ")
    if args.lower() in _OPTIONS:  # options whose name has blanks in it
        return f"Option {_OPTIONS[args.lower()]}", ""
    return f"Option {_OPTIONS.get(option.lower(), option)}", rest.strip()


def known_option(name: str) -> bool:
    return name.startswith("Option ") and name.split(" ", 1)[1].lower() in _OPTIONS
