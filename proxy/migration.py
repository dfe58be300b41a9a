"""Links that already exist keep working: EZproxy's proxied host names under the old proxy name.

Library websites, catalogues and discovery layers carry thousands of links in EZproxy's forms.
With ``[migration] old_hosts = ["ezproxy.library.org"]`` and the old name's DNS pointed at this
proxy, they are redirected to the same page under this proxy:

* ``https://ezproxy.library.org/login?url=...`` (a starting point) → ``/login?...`` here, where
  every safety rule for starting points applies as usual;
* ``https://www-vendor-com.ezproxy.library.org/path`` (EZproxy's hyphenated proxy-by-hostname
  form: ``-`` for ``.``, ``--`` for ``-``) and ``https://www.vendor.com.ezproxy.library.org/path``
  (its dotted form) → the vendor's proxied host here, same path and query, when the vendor
  host is configured; anything else is "not configured", as for any unknown host.

Pure: the caller redirects.
"""

from __future__ import annotations

from collections.abc import Sequence

from proxy.vendors import Origin, VendorMap, decode_host, valid_host


def old_link(host: str, raw_path: str, old_hosts: Sequence[str], vendors: VendorMap, public_origin: str
             ) -> str | None:
    """Where a request for ``host`` (lower case, maybe with a port) under an old proxy name
    goes now, or None when it is not one or names no configured vendor."""
    name = host.rpartition(":")[0] if ":" in host else host
    for old in old_hosts:
        if name == old:
            if raw_path.startswith("/login"):
                return f"{public_origin}{raw_path}"
            return f"{public_origin}/databases"
        if not name.endswith("." + old):
            continue
        label = name[: -len(old) - 1]
        candidates = [label] if "." in label else [c for c in (decode_host(label),) if c]
        for candidate in candidates:
            if not valid_host(candidate):
                continue
            # An origin a vendor lists exactly wins over one its domains cover: the old
            # name does not say whether the vendor was on http or https.
            origins = [Origin(scheme, candidate, port) for scheme, port in (("https", 443), ("http", 80))]
            listed = [o for o in origins if (v := vendors.match(o)) is not None and o in v.origins]
            covered = [o for o in origins if vendors.match(o) is not None]
            for origin in (*listed, *covered):
                proxied = vendors.proxied_origin(origin)
                if proxied is not None:
                    return f"{proxied}{raw_path}"
    return None
