"""Less for vendors to fingerprint: the browser's User-Agent and Accept-Language, reduced.

With one shared membership token and no client address, these two headers are what is left to
tell patrons apart at a vendor. Reduced (the default, ``[privacy]``):

* ``User-Agent`` keeps only the browser family, its major version, and a platform class, in the
  frozen form browsers already send (Chrome's reduced User-Agent: fixed OS versions, ``.0.0.0``
  minor versions, one device model "K" on Android). Vendors still see which browser renders their
  pages; every Chrome 131 on Windows says the same thing.
* ``Accept-Language`` keeps its first language only.

Pure functions, cached: the same few hundred strings come back all day.
"""

from __future__ import annotations

import functools
import re

_PLATFORMS = (
    # (test on the original, frozen platform text, mobile)
    ("iphone", "iPhone; CPU iPhone OS 18_0 like Mac OS X", True),
    ("ipad", "iPad; CPU OS 18_0 like Mac OS X", True),
    ("android", "Linux; Android 10; K", True),
    ("cros", "X11; CrOS x86_64 14541.0.0", False),
    ("windows", "Windows NT 10.0; Win64; x64", False),
    ("macintosh", "Macintosh; Intel Mac OS X 10_15_7", False),
    ("mac os x", "Macintosh; Intel Mac OS X 10_15_7", False),
    ("linux", "X11; Linux x86_64", False),
)
_FIREFOX_PLATFORMS = {
    "Windows NT 10.0; Win64; x64": "Windows NT 10.0; Win64; x64",
    "Macintosh; Intel Mac OS X 10_15_7": "Macintosh; Intel Mac OS X 10.15",
    "X11; Linux x86_64": "X11; Linux x86_64",
    "X11; CrOS x86_64 14541.0.0": "X11; Linux x86_64",
}
# Families, most specific first: Edge and Opera also say "Chrome", Chrome also says "Safari".
_FAMILIES = (
    ("edge", re.compile(r"\bEdg(?:e|A|iOS)?/(\d{1,4})")),
    ("opera", re.compile(r"\bOPR/(\d{1,4})")),
    ("samsung", re.compile(r"\bSamsungBrowser/(\d{1,4})")),
    ("firefox", re.compile(r"\b(?:Firefox|FxiOS)/(\d{1,4})")),
    ("chrome", re.compile(r"\b(?:Chrome|CriOS)/(\d{1,4})")),
    ("safari", re.compile(r"\bVersion/(\d{1,4})(?:\.\d+)*(?: Mobile/\S+)? Safari/")),
)
_CHROME = re.compile(r"\bChrome/(\d{1,4})")
GENERIC = "Mozilla/5.0"
_LANGUAGE = re.compile(r"^[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8}){0,3}\Z")


def _platform(ua: str) -> tuple[str, bool] | None:
    low = ua.lower()
    for needle, text, mobile in _PLATFORMS:
        if needle in low:
            return text, mobile
    return None


@functools.lru_cache(maxsize=1024)
def reduce_user_agent(ua: str) -> str:
    """The reduced form of a browser's User-Agent (``GENERIC`` for anything unrecognised)."""
    found = _platform(ua)
    if found is None:
        return GENERIC
    platform, mobile = found
    android = platform.startswith("Linux; Android")
    if android:
        mobile = "mobile" in ua.lower()
    apple_mobile = platform.startswith(("iPhone", "iPad"))
    for family, pattern in _FAMILIES:
        match = pattern.search(ua)
        if match is None:
            continue
        major = match.group(1)
        if family == "firefox":
            if apple_mobile:
                break  # Firefox on iOS is Safari underneath: say so
            if android:
                kind = "Mobile" if mobile else "Tablet"
                return f"Mozilla/5.0 (Android 10; {kind}; rv:{major}.0) Gecko/{major}.0 Firefox/{major}.0"
            desktop = _FIREFOX_PLATFORMS.get(platform, "X11; Linux x86_64")
            return f"Mozilla/5.0 ({desktop}; rv:{major}.0) Gecko/20100101 Firefox/{major}.0"
        if family == "safari":
            if not platform.startswith(("iPhone", "iPad", "Macintosh")):
                return GENERIC
            tail = " Mobile/15E148" if apple_mobile else ""
            return (f"Mozilla/5.0 ({platform}) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{major}.0"
                    f"{tail} Safari/605.1.15")
        if apple_mobile:
            break  # every iOS browser is Safari underneath
        mobile_token = "Mobile " if mobile else ""
        chrome = _CHROME.search(ua)
        engine = chrome.group(1) if chrome else major  # Edge, Opera, Samsung: the Chromium underneath
        base = (f"Mozilla/5.0 ({platform}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{engine}.0.0.0 "
                f"{mobile_token}Safari/537.36")
        suffix = {"edge": f" Edg/{major}.0.0.0", "opera": f" OPR/{major}.0.0.0",
                  "samsung": f" SamsungBrowser/{major}.0"}.get(family, "")
        return base + suffix
    if apple_mobile:
        version = re.search(r"\bOS (\d{1,2})_", ua)
        major = version.group(1) if version else "18"
        return (f"Mozilla/5.0 ({platform}) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{major}.0"
                " Mobile/15E148 Safari/605.1.15")
    return GENERIC


@functools.lru_cache(maxsize=256)
def first_language(value: str) -> str | None:
    """The first language of an Accept-Language value (``"es-MX,es;q=0.9,en"`` -> ``"es-MX"``);
    None when it names none."""
    first = value.split(",", 1)[0].split(";", 1)[0].strip()
    return first if _LANGUAGE.match(first) else None
