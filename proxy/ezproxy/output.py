"""Writing the converted table as TOML the proxy's configuration reads (``[[vendor]]`` entries and
``[[network.library]]`` networks), byte-identical for the same input.

Nothing in it depends on the clock, the machine or dictionary order: keys are written in a fixed
order, lists in the order EZproxy listed them, and the header names the input files as given.
"""

from __future__ import annotations

from proxy.ezproxy.convert import Stanza
from proxy.ezproxy.tables import Conversion
from proxy.ezproxy.urls import emit_hosts

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(value: str) -> str:
    """A TOML basic string; control characters are escaped so the file stays one line per key."""
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_list(values: list[str] | tuple[str, ...]) -> str:
    """A list on one line when short, else one item per line (readable diffs under version control)."""
    items = [toml_string(v) for v in values]
    line = "[" + ", ".join(items) + "]"
    if len(line) <= 100:
        return line
    return "[\n" + "".join(f"    {item},\n" for item in items) + "]"


def _comment(text: str) -> str:
    """A one-line TOML comment; TOML refuses control characters there, so they become "?"."""
    clean = "".join("?" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in " ".join(text.split()))
    return "# " + clean


def render_toml(conversion: Conversion, files: list[str]) -> str:
    out = [
        "# Vendor entries converted from EZproxy configuration by `libproxy import-ezproxy`.",
        _comment(f"Read: {', '.join(files)}") if len(files) <= 5 else _comment(f"Read: {len(files)} files"),
        "# Review the import report before use; check the result with `libproxy check-config`.",
        "",
    ]
    for network in conversion.networks:
        out += [
            "[[network.library]]",
            f"name = {toml_string(network.name)}",
            f"cidrs = {toml_list(network.cidrs)}",
            f"groups = {toml_list(network.groups)}",
            "",
        ]
    for stanza in conversion.vendors:
        out += _vendor(stanza, conversion.on_site(stanza))
    return "\n".join(out).rstrip("\n") + "\n"


def _vendor(stanza: Stanza, on_site: str) -> list[str]:
    source = f": Title {stanza.source_title}" if stanza.source_title else ""  # keeps OCLC's stanza version
    lines = [
        _comment(f"from {stanza.file}:{stanza.line}{source}"),
        "[[vendor]]",
        f"id = {toml_string(stanza.id)}",
        f"title = {toml_string(stanza.title)}",
    ]
    if stanza.description:
        lines.append(f"description = {toml_string(stanza.description)}")
    lines.append(f"start = {toml_string(stanza.start)}")
    lines.append(f"hosts = {toml_list(emit_hosts(stanza.origins))}")
    if stanza.domains:
        lines.append(f"domains = {toml_list(stanza.domains)}")
    lines.append(f"groups = {toml_list(stanza.groups)}")
    if on_site != "proxy":
        lines.append(f"on_site = {toml_string(on_site)}")
    if stanza.anonymous_paths:
        lines.append(f"anonymous_paths = {toml_list(stanza.anonymous_paths)}")
    if stanza.cookie_passthrough:
        lines.append("cookie_passthrough = true")
    for find, replace in stanza.replace:
        lines += ["[[vendor.replace]]", f"find = {toml_string(find)}", f"replace = {toml_string(replace)}"]
    lines.append("")
    return lines
