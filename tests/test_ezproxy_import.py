"""`libproxy import-ezproxy`: EZproxy configuration in, vendor TOML and a report out.

Unit tests per directive and order rule use small inline configurations written to tmp dirs;
the corpus tests run OCLC's and the community's real stanzas (../shared/corpus, read in place)
and check every file imports or is reported, and every privacy-breaking line is flagged. Each
output is loaded with the proxy's own configuration loader, as `check-config` does.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy import config as config_mod
from proxy.cli import main as cli_main
from proxy.ezproxy import ImportResult, run_import
from proxy.ezproxy.convert import derive_id
from proxy.ezproxy.directives import canonical_name
from proxy.ezproxy.report import Finding, Kind, render_json, render_text

ROOT = Path(__file__).resolve().parents[1]
CORPUS = (ROOT / ".." / "shared" / "corpus" / "ezproxy-stanzas").resolve()
VENDOR_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")

BASE_CONFIG = """\
[proxy]
host = "proxy.library.invalid"
state_dir = "state"

[library]
id = "wolcott.lib.ct.us"
name = "Wolcott Public Library"

[patrons]
source = "local"
file = "patrons.toml"

[admin]
listen = ""

"""


def write(tmp: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def convert(tmp: Path, text: str, groups: tuple[str, ...] = ("default",)) -> ImportResult:
    return run_import([str(write(tmp, "config.txt", text))], groups)


def vendors(result: ImportResult) -> dict[str, dict[str, object]]:
    return {v["id"]: v for v in tomllib.loads(result.toml).get("vendor", [])}


def networks(result: ImportResult) -> list[dict[str, object]]:
    data = tomllib.loads(result.toml)
    return list(data.get("network", {}).get("library", []))


def findings(result: ImportResult, kind: Kind | None = None, directive: str | None = None) -> list[Finding]:
    return [f for f in result.report.findings
            if (kind is None or f.kind is kind) and (directive is None or f.directive == directive)]


def check_config(tmp: Path, toml_text: str) -> config_mod.Config:
    """What `libproxy check-config` does with the imported entries under a minimal configuration."""
    path = tmp / "libproxy.toml"
    path.write_text(BASE_CONFIG + toml_text, encoding="utf-8")
    return config_mod.load(path)


# ----------------------------------------------------------------------------------------------
# Reading: comments, case, short names, wrapped lines, encodings, IncludeFile


def test_comments_case_and_abbreviations(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "# a comment\n"
        "   # an indented comment\n"
        "\n"
        "t Case Test\r\n"
        "u https://www.case.example/start#frag\r\n"
        "HJ www.case.example\n"
        "hostjavascript https://api.case.example\n"
        "dJ cdn.case.example\n"
        "DOMAIN .media.case.example\n"
        "oPtIoN cookiepassthrough\n"
        "TITLE Next\n"
        "URL https://next.example/\n"
    ))
    got = vendors(result)
    case = got["case-test"]
    assert case["start"] == "https://www.case.example/start#frag"  # "#" inside an argument is data
    assert case["hosts"] == ["www.case.example", "https://api.case.example"]
    assert case["domains"] == ["cdn.case.example", "media.case.example"]
    assert "cookie_passthrough" not in case  # set after Case Test started: applies to Next
    assert got["next"]["cookie_passthrough"] is True
    assert findings(result, Kind.ERROR) == []


def test_url_and_bare_host_merge_into_one_entry(tmp_path: Path) -> None:
    result = convert(tmp_path, "T V\nU http://www.v.example\nH https://www.v.example\nH odd.v.example:8443\n")
    assert vendors(result)["v"]["hosts"] == ["www.v.example", "odd.v.example:8443"]


def test_wrapped_line_is_joined_and_reported(tmp_path: Path) -> None:
    result = convert(tmp_path, "Title Wrapped\nURL https://www.wrapped.example/a/very/long/\n    path/start.html\n")
    assert vendors(result)["wrapped"]["start"] == "https://www.wrapped.example/a/very/long/path/start.html"
    notes = findings(result, Kind.NOTE)
    assert any(f.line == 3 and "line 2" in f.message for f in notes)


def test_indented_directive_is_a_directive_not_a_continuation(tmp_path: Path) -> None:
    result = convert(tmp_path, "Title A\n  URL https://a.example\n  HJ b.example\n")
    assert vendors(result)["a"]["hosts"] == ["https://a.example", "b.example"]


def test_latin1_file_is_read_and_noted(tmp_path: Path) -> None:
    path = write(tmp_path, "latin.txt", "Title Bibliothèque numérique\nURL https://bn.example\n", encoding="latin-1")
    result = run_import([str(path)])
    assert vendors(result)["bibliotheque-numerique"]["title"] == "Bibliothèque numérique"
    assert any("Windows-1252" in f.message for f in findings(result, Kind.NOTE))
    title = "Grove\u2019s Dictionary \u2013 Music"  # curly quote and dash: bytes 0x92 and 0x96
    quotes = write(tmp_path, "cp1252.txt", f"Title {title}\nURL https://g.example\n", "cp1252")
    assert vendors(run_import([str(quotes)]))["groves-dictionary-music"]["title"] == title
    undefined = tmp_path / "undefined.txt"  # 0x81 is not Windows-1252: Latin-1 takes it
    undefined.write_bytes(b"Title A\x81B\nURL https://ab.example\n")
    assert any("Latin-1" in f.message for f in findings(run_import([str(undefined)]), Kind.NOTE))


def test_odd_characters_stay_valid_toml(tmp_path: Path) -> None:
    result = convert(tmp_path, 'Title Tab\tand "quotes" \\ and \x01 control\nURL https://odd.example/a?b="c"\n')
    entry = vendors(result)["tab-and-quotes-and-control"]
    assert entry["title"] == 'Tab and "quotes" \\ and \x01 control'
    assert entry["start"] == 'https://odd.example/a?b="c"'


def test_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfTitle Bom\nURL https://bom.example\n")
    assert "bom" in vendors(run_import([str(path)]))


def test_include_file_is_relative_to_the_including_file(tmp_path: Path) -> None:
    write(tmp_path, "stanzas/a.txt", "Title A\nURL https://a.example\nIncludeFile more/b.txt\n")
    write(tmp_path, "stanzas/more/b.txt", "Title B\nURL https://b.example\n")
    main = write(tmp_path, "config.txt", "Group Default\nIncludeFile stanzas/a.txt\nTitle C\nURL https://c.example\n")
    result = run_import([str(main)])
    assert list(vendors(result)) == ["a", "b", "c"]
    assert len(result.report.files) == 3
    assert findings(result, Kind.ERROR) == []


def test_include_written_on_windows_is_found(tmp_path: Path) -> None:
    write(tmp_path, "stanzas/ebsco.txt", "Title E\nURL https://e.example\n")
    main = write(tmp_path, "config.txt", "IncludeFile Stanzas\\EBSCO.TXT\n")
    result = run_import([str(main)])
    assert list(vendors(result)) == ["e"]
    assert "found as stanzas/ebsco.txt" in findings(result, Kind.NOTE, "IncludeFile")[0].message


def test_include_cycle_is_refused_with_the_chain(tmp_path: Path) -> None:
    write(tmp_path, "a.txt", "Title A\nURL https://a.example\nIncludeFile b.txt\n")
    write(tmp_path, "b.txt", "Title B\nURL https://b.example\nIncludeFile a.txt\n")
    result = run_import([str(tmp_path / "a.txt")])
    errors = findings(result, Kind.ERROR, "IncludeFile")
    assert len(errors) == 1
    assert errors[0].line == 3 and errors[0].file.endswith("b.txt")
    assert "a.txt -> b.txt -> a.txt" in errors[0].message
    assert list(vendors(result)) == ["a", "b"]  # everything read before the cycle is kept


def test_self_include_and_missing_include_are_findings(tmp_path: Path) -> None:
    result = convert(tmp_path, "IncludeFile config.txt\nIncludeFile nowhere.txt\nTitle A\nURL https://a.example\n")
    messages = [f.message for f in findings(result, Kind.ERROR, "IncludeFile")]
    assert any("would include itself" in m for m in messages)
    assert any("nowhere.txt: no such file" in m for m in messages)
    assert "a" in vendors(result)


# ----------------------------------------------------------------------------------------------
# Stanzas: titles, ids, URLs, hosts, domains


def test_ids_are_derived_deterministically_and_unique() -> None:
    taken: set[str] = set()
    assert derive_id("EBSCOhost", taken) == "ebscohost"
    assert derive_id("EBSCOhost", taken) == "ebscohost-2"
    long = derive_id("The Very Long Title Of A Database That Goes On And On Forever", taken)
    assert VENDOR_ID.match(long) and len(long) <= 40
    assert derive_id("Ætherische Öle — ein Überblick", taken) == "therische-ole-ein-uberblick"
    assert derive_id("!!!", taken) == "vendor"


def test_title_noise_and_hide(tmp_path: Path) -> None:
    result = convert(tmp_path, "Title -Hide JSTOR (updated 20250529)\nURL https://www.jstor.org\n")
    entry = vendors(result)["jstor"]
    assert entry["title"] == "JSTOR"
    assert any("-Hide" in f.message for f in findings(result, Kind.NO_EQUIVALENT, "Title"))


def test_url_without_title_starts_a_database(tmp_path: Path) -> None:
    result = convert(tmp_path, "URL http://www.kluwerpatentlaw.com\nHJ www.kluwerpatentlaw.com\n")
    assert vendors(result)["www-kluwerpatentlaw-com"]["start"] == "http://www.kluwerpatentlaw.com"


def test_description_nested_domains_and_a_second_chance_url(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "Title V\nURL https://v.example\nDescription A general encyclopedia\nDJ v.example\nDJ cdn.v.example\n"
        "Title W\nURL htp:/broken\nURL https://w.example\n"
        "Option I choose to use Domain lines that threaten the security of my network\n"
    ))
    got = vendors(result)
    assert got["v"]["description"] == "A general encyclopedia"
    assert got["v"]["domains"] == ["v.example"]  # cdn.v.example adds nothing under v.example
    assert got["w-example"]["start"] == "https://w.example"  # the broken URL is reported, the next one starts anew
    assert [f.line for f in findings(result, Kind.ERROR)] == [7]
    assert findings(result, Kind.NO_EQUIVALENT)[0].directive.startswith("Option I choose")


def test_stanza_without_url_is_an_error(tmp_path: Path) -> None:
    result = convert(tmp_path, "Title Nothing\nHJ nothing.example\n")
    assert vendors(result) == {}
    assert findings(result, Kind.ERROR, "Title")[0].line == 1


def test_bad_hosts_and_top_level_domains_are_refused(tmp_path: Path) -> None:
    result = convert(tmp_path, "Title V\nURL https://v.example\nHJ htttp://v.example\nDJ com\nHJ *.wild.example\n")
    entry = vendors(result)["v"]
    assert entry["hosts"] == ["https://v.example"]
    assert entry["domains"] == ["wild.example"]
    errors = {f.line: f.message for f in findings(result, Kind.ERROR)}
    assert set(errors) == {3, 4} and "top-level" in errors[4]


def test_placeholders_are_to_fill_in_not_errors(tmp_path: Path) -> None:
    result = convert(tmp_path, "Title Naxos\nURL https://[siteID].naxosmusiclibrary.com\nHJ [siteID].naxos.com\n")
    assert vendors(result) == {}
    assert [f.line for f in findings(result, Kind.FILL_IN)] == [2, 3]
    assert findings(result, Kind.ERROR) == []


def test_form_login_url_keeps_the_start_and_reports(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "Title Forms\nURL -Form=post -RewriteHost login https://forms.example/login\n"
        "FormVariable user=library\nFormVariable password=secret\n"
    ))
    assert vendors(result)["forms"]["start"] == "https://forms.example/login"
    lines = [f.line for f in findings(result, Kind.NO_EQUIVALENT)]
    assert lines == [2, 2, 3, 4]


# ----------------------------------------------------------------------------------------------
# Position-dependent rules


def test_groups_apply_to_the_stanzas_after_them(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "Title Before\nURL https://before.example\n"
        "Group Law+Default\nTitle Law\nURL https://law.example\n"
        "Group Medical School\nTitle Med\nURL https://med.example\n"
    ), groups=("wolcott", "bibliomation"))
    got = vendors(result)
    assert got["before"]["groups"] == ["wolcott", "bibliomation"]
    assert got["law"]["groups"] == ["law", "wolcott", "bibliomation"]
    assert got["med"]["groups"] == ["medical", "school"]


def test_cookie_passthrough_until_reset(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "Option CookiePassThrough\nTitle A\nURL https://a.example\nTitle B\nURL https://b.example\n"
        "Option Cookie\nTitle C\nURL https://c.example\n"
    ))
    got = vendors(result)
    assert got["a"]["cookie_passthrough"] is True and got["b"]["cookie_passthrough"] is True
    assert "cookie_passthrough" not in got["c"]
    assert findings(result, Kind.DEFAULT, "Option Cookie")[0].line == 6


def test_ip_directives_become_library_networks(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "Title Early\nURL https://early.example\n"
        "A 192.0.2.0-192.0.2.255\n"
        "Title Proxied\nURL https://proxied.example\n"
        "ExcludeIP 198.51.100.0 - 198.51.100.255\n"
        "IncludeIP 198.51.100.128-198.51.100.255\n"
        "Title Direct\nURL https://direct.example\n"
    ), groups=("wolcott",))
    nets = {n["name"]: n for n in networks(result)}
    assert nets["ezproxy-autologin"]["cidrs"] == ["192.0.2.0/24"]
    assert nets["ezproxy-autologin"]["groups"] == ["wolcott"]
    assert nets["ezproxy-excludeip"]["cidrs"] == ["198.51.100.0/25"]
    got = vendors(result)
    assert "on_site" not in got["proxied"]
    assert "on_site" not in got["direct"]  # AutoLoginIP still applies there: proxying always works
    assert any("early" in f.message for f in findings(result, Kind.NOTE, "AutoLoginIP"))


def test_exclude_ip_alone_sends_on_site_patrons_direct(tmp_path: Path) -> None:
    result = convert(tmp_path, "ExcludeIP 10.0.0.0/8\nTitle D\nURL https://d.example\n")
    assert vendors(result)["d"]["on_site"] == "direct"
    assert networks(result) == [{"name": "ezproxy-excludeip", "cidrs": ["10.0.0.0/8"], "groups": ["default"]}]
    bad = convert(tmp_path, "ExcludeIP 10.0.0.300\nTitle D\nURL https://d.example\n")
    assert findings(bad, Kind.ERROR, "ExcludeIP")


def test_anonymous_url_rules(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "AnonymousURL +*.woff*\n"
        "AnonymousURL +https://open.single.example/rss/*\n"
        "Title Single\nURL https://open.single.example/\n"
        "AnonymousURL -*\n"
        "AnonymousURL +https://api.multi.example/*\n"
        "AnonymousURL -RE +https://api\\.multi\\.example/x.*\n"
        "AnonymousURL -Options +https://www.multi.example/*\n"
        "Title Multi\nURL https://www.multi.example/\nHJ api.multi.example\n"
        "AnonymousURL -*\n"
        "AnonymousURL +https://www.q.example/?format=json\n"
        "Title Q\nURL https://www.q.example/\n"
        "AnonymousURL -*\n"
        "AnonymousURL +https://nowhere.example/*\n"
        "AnonymousURL -*\n"
    ))
    got = vendors(result)
    assert got["single"]["anonymous_paths"] == ["/*.woff*", "/rss/*"]
    assert "anonymous_paths" not in got["multi"]
    assert "anonymous_paths" not in got["q"]
    refused = {f.line: f.message for f in findings(result, Kind.NO_EQUIVALENT, "AnonymousURL")}
    assert "every host of the vendor" in refused[6]
    assert "regular expression" in refused[7]
    assert "OPTIONS" in refused[8]
    assert "query" in refused[13]
    assert "matches no host" in refused[17]


def test_anonymous_exception_keeps_sign_in(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "AnonymousURL +https://s.example/*\nAnonymousURL -https://s.example/private/*\n"
        "Title S\nURL https://s.example/\n"
    ))
    assert "anonymous_paths" not in vendors(result)["s"]
    assert any("exception" in f.message for f in findings(result, Kind.NO_EQUIVALENT, "AnonymousURL"))


def test_never_proxy(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "Title V\nURL https://www.v.example\nHJ cdn.v.example\nDJ v-media.example\n"
        "NeverProxy cdn.v.example\nNeverProxy assets.v-media.example\nNeverProxy fonts.googleapis.com\n"
        "Title Gone\nURL https://gone.example\nNeverProxy gone.example\n"
    ))
    got = vendors(result)
    assert got["v"]["hosts"] == ["https://www.v.example"]
    assert "gone" not in got
    kinds = {f.line: f.kind for f in findings(result) if f.directive == "NeverProxy"}
    assert kinds == {5: Kind.NOTE, 6: Kind.NO_EQUIVALENT, 7: Kind.DEFAULT, 10: Kind.NO_EQUIVALENT}


def test_duplicate_hosts_first_stanza_wins(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "Title First\nURL https://www.first.example\nHJ shared.example\nDJ shared-domain.example\n"
        "Title Second\nURL https://www.second.example\nHJ shared.example\nDJ shared-domain.example\n"
        "Title Third\nURL https://shared.example/start\n"
        "Title Fourth\nURL https://www.fourth.example\nHJ x.shared-domain.example\nHJ x.shared-domain.example:8443\n"
        "DJ sub.shared-domain.example\n"
        "Title Fifth\nURL https://www.shared-domain.example/\n"
    ))
    got = vendors(result)
    assert got["first"]["hosts"] == ["https://www.first.example", "shared.example"]
    assert got["second"]["hosts"] == ["https://www.second.example"]
    assert "domains" not in got["second"]
    assert "third" not in got and "fifth" not in got
    # An earlier Domain takes the hosts and sub-domains under it (on default ports, as ours match).
    assert got["fourth"]["hosts"] == ["https://www.fourth.example", "x.shared-domain.example:8443"]
    assert "domains" not in got["fourth"]
    dups = {f.line: f.message for f in findings(result, Kind.DUPLICATE)}
    assert "'first'" in dups[5] and "domain shared-domain.example" in dups[5]
    assert "not imported" in dups[9] and "not imported" in dups[16]
    assert "domain sub.shared-domain.example" in dups[11]
    check_config(tmp_path, result.toml)


# ----------------------------------------------------------------------------------------------
# Find/Replace and the other per-database directives


def test_find_replace_pairs_and_markers(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "Find before-anything\nReplace x\n"
        "Title R\nURL https://r.example\n"
        "Find location.hostname\nReplace location.host\n"
        "Find \"https:\\/\\/r.example\nReplace \"https://^Sr.example^\n"
        "Find www.r.example\nReplace ^Pwww.r.example^\n"
        "Find NAME=\"ref\" VALUE=\"http://\nReplace NAME=\"ref\" VALUE=\"http://^A\n"
        "Find lonely\nHJ other.r.example\n"
        "Replace orphan\n"
    ))
    assert vendors(result)["r"]["replace"] == [
        {"find": "location.hostname", "replace": "location.host"},
        {"find": "\"https:\\/\\/r.example", "replace": "\"https://r.example"},
    ]
    by_line = {(f.line, f.kind) for f in findings(result)}
    assert (1, Kind.ERROR) in by_line  # Find outside a database
    assert (10, Kind.DEFAULT) in by_line  # ^P of the same host: rewriting does it
    assert (12, Kind.NO_EQUIVALENT) in by_line  # ^A
    assert (13, Kind.ERROR) in by_line and (15, Kind.ERROR) in by_line


def test_fixed_verdicts_of_per_database_directives(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "Title D\nURL https://d.example\n"
        "HTTPHeader -request -process X-EIS-Feature-Flag\nHTTPMethod PUT\nByteServe\n"
        "MimeFilter application/json .* javascript\nMimeFilter text/event-stream .* javascript\n"
        "ProxyHostnameEdit d.example$ d-example\nPHE x$ y\nRedirectSafe login.d.example\n"
        "Cookie name=value; domain=.d.example\nOption DomainCookieOnly\nOption NoCookie\nWhatever x\nOption Odd\n"
    ))
    kinds = [(f.directive, f.kind) for f in findings(result)]
    assert kinds == [
        ("HTTPHeader", Kind.NO_EQUIVALENT), ("HTTPMethod", Kind.DEFAULT), ("ByteServe", Kind.DEFAULT),
        ("MimeFilter", Kind.DEFAULT), ("MimeFilter", Kind.NO_EQUIVALENT),
        ("ProxyHostnameEdit", Kind.DEFAULT), ("ProxyHostnameEdit", Kind.DEFAULT), ("RedirectSafe", Kind.NO_EQUIVALENT),
        ("Cookie", Kind.NO_EQUIVALENT), ("Option DomainCookieOnly", Kind.DEFAULT), ("Option NoCookie", Kind.DEFAULT),
        ("Whatever", Kind.NO_EQUIVALENT), ("Option Odd", Kind.NO_EQUIVALENT),
    ]
    assert all(f.vendor == "d" for f in findings(result) if f.directive in ("HTTPHeader", "Cookie"))
    headers = convert(tmp_path, (
        "Title H\nURL https://h.example\nHTTPHeader -request -process Range\nHTTPHeader Authorization\n"
        "HTTPHeader -response -block Set-Cookie\n"
        "HTTPHeader -request -inject x-proxy-server (server:url:http =~ \"@^http://([^:]+)@\", re:1)\n"
    ))
    assert [(f.kind, f.message.split(" ")[0]) for f in findings(headers)] == [
        (Kind.DEFAULT, "Range"), (Kind.NO_EQUIVALENT, "Authorization"), (Kind.DEFAULT, "Set-Cookie:"),
        (Kind.NO_EQUIVALENT, "x-proxy-server:"),
    ]


# ----------------------------------------------------------------------------------------------
# Privacy


PRIVACY_CONFIG = """\
LogFormat %h %l %u %t "%r" %s %b
LogFormat %t "%r" %s
LogSPU -strftime spu.log %h %u %{ezproxy-session}i
Audit Most
Identifier -sha1 secret
Option LogUser
Option X-Forwarded-For
AddUserHeader X-Library-User
HTTPHeader -request -inject X-Patron (session:user)
Title Leaky
URL https://leaky.example/start?lib=1&user=^U
AddUserHeader
Option NoX-Forwarded-For
Title Clean
URL https://clean.example/
"""


def test_privacy_breaking_directives_are_named_and_not_carried(tmp_path: Path) -> None:
    result = convert(tmp_path, PRIVACY_CONFIG)
    privacy = {f.line: f for f in findings(result, Kind.PRIVACY)}
    assert sorted(privacy) == [1, 3, 4, 5, 6, 7, 8, 9, 11]
    assert "^U" in privacy[11].message
    assert privacy[7].message.endswith("(it applied to leaky)")  # ended by NoX-Forwarded-For before Clean
    assert privacy[8].message.endswith("(it applied to leaky)")  # ended by the bare AddUserHeader
    got = vendors(result)
    assert got["leaky"]["start"] == "https://leaky.example/start?lib=1"
    assert "X-Library-User" not in result.toml
    text = render_text(result.report)
    assert "config.txt:8: AddUserHeader" in text
    assert "signed membership assertion" in text
    not_privacy = {f.line: f.kind for f in findings(result) if f.line in (2, 12, 13)}
    assert not_privacy == {2: Kind.DEFAULT, 12: Kind.DEFAULT, 13: Kind.DEFAULT}


# ----------------------------------------------------------------------------------------------
# A whole config.txt, determinism, check-config, the command line


CONFIG_TXT = """\
# EZproxy config.txt of a small public library
Name ezproxy.wolcott.example
LoginPortSSL 443
Option ProxyByHostname
Option ForceHTTPSLogin
MaxLifetime 120
MaxSessions 500
AuditPurge 7
LogFile ezproxy.log
LogFormat %t %r
Interface 0.0.0.0
SSLCipherSuite HIGH
RejectIP 203.0.113.7

ExcludeIP 192.0.2.10-192.0.2.20
AutoLoginIP 198.51.100.0/24

Group Default
IncludeFile stanzas/ebsco.txt

Option CookiePassThrough
Title Gale Virtual Reference Library
URL https://go.galegroup.com/ps/start.do?p=GVRL&u=wolcott
HJ go.galegroup.com
DJ galegroup.com
DJ gale.com
Option Cookie

Group Genealogy
Title Ancestry Library Edition
URL https://ancestrylibrary.proquest.com
D ancestrylibrary.com
D ancestrylibrary.proquest.com
NeverProxy support.ancestry.com
"""

EBSCO_TXT = """\
HTTPMethod PUT
Option Cookie
AddUserHeader -base64 X-EBSCO-PROXY-Username
AnonymousURL +https://ppws.ebsco-content.com/*
Title EBSCOhost (updated 20260608)
HTTPHeader -request -process userIdentifier
URL https://search.ebscohost.com/login.aspx
HJ search.ebscohost.com
HJ https://search.ebscohost.com
DJ ebscohost.com
DJ ebsco-content.com
AnonymousURL -*
AddUserHeader
"""


def test_whole_config_txt(tmp_path: Path) -> None:
    write(tmp_path, "stanzas/ebsco.txt", EBSCO_TXT)
    main = write(tmp_path, "config.txt", CONFIG_TXT)
    result = run_import([str(main)], ("wolcott", "bibliomation"))
    got = vendors(result)
    assert list(got) == ["ebscohost", "gale-virtual-reference-library", "ancestry-library-edition"]
    assert got["ebscohost"]["groups"] == ["wolcott", "bibliomation"]
    assert got["ancestry-library-edition"]["groups"] == ["genealogy"]
    assert got["gale-virtual-reference-library"]["cookie_passthrough"] is True
    assert "cookie_passthrough" not in got["ancestry-library-edition"]
    assert got["gale-virtual-reference-library"]["start"] == "https://go.galegroup.com/ps/start.do?p=GVRL&u=wolcott"
    assert {n["name"] for n in networks(result)} == {"ezproxy-autologin", "ezproxy-excludeip"}
    privacy = findings(result, Kind.PRIVACY)
    assert [(Path(f.file).name, f.line, f.directive) for f in privacy] == [("ebsco.txt", 3, "AddUserHeader")]
    assert findings(result, Kind.ERROR) == []
    anonymous = findings(result, Kind.NO_EQUIVALENT, "AnonymousURL")  # a host under EBSCO's domain, one of many
    assert [(Path(f.file).name, f.line) for f in anonymous] == [("ebsco.txt", 4)]
    assert "every host of the vendor" in anonymous[0].message
    # Every directive line is accounted for: mapped (in the TOML) or named in the report.
    reported = {(Path(f.file).name, f.line) for f in result.report.findings}
    for line_no in (2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13):
        assert ("config.txt", line_no) in reported, line_no
    cfg = check_config(tmp_path, result.toml)
    assert len(cfg.vendors) == 3
    assert run_import([str(main)], ("wolcott", "bibliomation")).toml == result.toml


def test_cli_writes_files_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "stanzas/ebsco.txt", EBSCO_TXT)
    main = write(tmp_path, "config.txt", CONFIG_TXT)
    out, report = tmp_path / "vendors.toml", tmp_path / "report.json"
    argv = ["import-ezproxy", str(main), "--out", str(out), "--report", str(report), "--json", "--groups", "wolcott"]
    assert cli_main(argv) == 0
    first = out.read_bytes()
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["summary"]["vendors"] == 3 and data["summary"]["findings"]["privacy"] == 1
    assert {"kind", "file", "line", "directive", "message", "vendor"} <= set(data["findings"][0])
    assert cli_main(argv) == 0
    assert out.read_bytes() == first  # byte-identical on re-run
    assert cli_main(["check-config", str(_full_config(tmp_path, out))]) == 0
    capsys.readouterr()


def _full_config(tmp: Path, vendors_file: Path) -> Path:
    path = tmp / "full.toml"
    path.write_text(BASE_CONFIG + vendors_file.read_text(encoding="utf-8"), encoding="utf-8")
    return path


@pytest.mark.parametrize(("make", "expected"), [
    (lambda tmp: tmp / "missing.txt", "missing.txt: no such file"),
    (lambda tmp: tmp, "is a directory"),
])
def test_cli_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path], Path], expected: str,
) -> None:
    assert cli_main(["import-ezproxy", str(make(tmp_path))]) == 1
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_unwritable_output_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write(tmp_path, "c.txt", "Title A\nURL https://a.example\n")
    assert cli_main(["import-ezproxy", str(src), "--out", str(tmp_path / "no" / "dir" / "v.toml")]) == 1
    err = capsys.readouterr().err
    assert "cannot write" in err and len(err.strip().splitlines()) == 1


def test_binary_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "image.txt"
    path.write_bytes(b"\x89PNG\x00\x00binary")
    result = run_import([str(path)])
    assert findings(result, Kind.ERROR)[0].message.startswith("is not a text file")


def test_text_report_lists_sections_and_vendors(tmp_path: Path) -> None:
    result = convert(tmp_path, PRIVACY_CONFIG)
    text = render_text(result.report)
    assert text.index("Privacy:") < text.index("Handled by the proxy by default")
    assert "leaky" in text.split("Vendor entries written")[1]
    assert json.loads(render_json(result.report))["summary"]["vendors"] == 2


# ----------------------------------------------------------------------------------------------
# The corpus: real stanzas, read in place


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        pytest.skip(f"the stanza corpus is not at {CORPUS}")
    return sorted(CORPUS.glob("*/*.txt"))


_PRIVACY_LINE = [re.compile(p, re.IGNORECASE) for p in (
    r"^adduserheader\s+\S",
    r"^option\s+x-forwarded-for\s*$",
    r"^(logformat|logspu)\s.*%(\{[^}]*\})?[uh]",
    r"^audit\s+\S",
    r"^identifier\b",
    r"^option\s+log(user|session|referer|saml)\s*$",
    r"^(url|u|host|h|hostjavascript|hj)\s.*\^[ub]",
    r"^(sso|tokenkey|tokensignaturekey|books24x7site|ebrarysite|eblsecret|overdrivesite)\b",
    r"^httpheader\s+(-\S+\s+)*\S+\s.*\b(login|session|user|auth|ip|client)\w*:",
)]


def scan_privacy(path: Path) -> set[int]:
    """Privacy-breaking lines found independently of the importer: a grep over the raw text."""
    lines = path.read_bytes().decode("utf-8", "replace").splitlines()
    return {n for n, line in enumerate(lines, start=1)
            if any(p.search(line.strip()) for p in _PRIVACY_LINE)}


# Directives whose whole content lands in the TOML (or that only reset a position-dependent
# setting): they need no line of their own in the report.
_CARRIED = {"Title", "URL", "Host", "HostJavaScript", "Domain", "DomainJavaScript", "Description", "Find", "Replace",
            "AnonymousURL", "IncludeFile", "IncludeIP", "Option CookiePassThrough"}


def assert_nothing_dropped_silently(path: Path, result: ImportResult) -> None:
    reported = {f.line for f in result.report.findings if f.file == str(path)}
    for number, line in enumerate(path.read_bytes().decode("utf-8", "replace").splitlines(), start=1):
        words = line.split(maxsplit=1)
        if not words or words[0].startswith("#"):
            continue
        name, _ = canonical_name(words[0], words[1] if len(words) > 1 else "")
        assert name in _CARRIED or number in reported, f"{path}:{number}: {line!r} is neither carried nor reported"


def test_corpus_every_file_imports_or_is_reported() -> None:
    files = corpus_files()
    assert len(files) > 1100
    with_errors: list[str] = []
    flagged = 0
    for path in files:
        result = run_import([str(path)])
        errors = findings(result, Kind.ERROR)
        if errors:
            with_errors.append(f"{errors[0].where}: {errors[0].message}")
        if not result.report.vendors:
            # Nothing imported: the report must say why, at a line of this file.
            assert any(f.file == str(path) and f.line >= 1 for f in result.report.findings), path
        assert_nothing_dropped_silently(path, result)
        assert not findings(result, directive="(output)"), path  # the vendor table passes the proxy's checks
        privacy = {f.line for f in findings(result, Kind.PRIVACY)}
        expected = scan_privacy(path)
        assert expected == privacy, (path, expected, privacy)
        flagged += len(privacy)
    assert len(with_errors) <= len(files) // 100, with_errors
    assert flagged >= 20  # AddUserHeader, X-Forwarded-For, SSO, tokens... in OCLC's own stanzas


def test_corpus_ebscohost_add_user_header_is_flagged() -> None:
    path = next(p for p in corpus_files() if p.name == "EBSCOhost.txt")
    result = run_import([str(path)])
    lines = path.read_text(encoding="utf-8").splitlines()
    line = next(n for n, text in enumerate(lines, 1) if text.startswith("AddUserHeader -base64"))
    assert any(f.line == line and f.directive == "AddUserHeader" for f in findings(result, Kind.PRIVACY))
    assert "X-EBSCO-PROXY-Username" not in result.toml


def test_corpus_imported_together_passes_check_config(tmp_path: Path) -> None:
    files = [str(p) for p in corpus_files()]
    result = run_import(files, ("wolcott", "bibliomation"))
    assert not findings(result, directive="(output)")
    cfg = check_config(tmp_path, result.toml)
    assert len(cfg.vendors) == len(result.report.vendors) > 1000
    assert all(VENDOR_ID.match(v.id) for v in cfg.vendors)
    assert findings(result, Kind.DUPLICATE)  # OCLC's stanzas overlap: reported, first one kept
    assert run_import(files, ("wolcott", "bibliomation")).toml == result.toml
