"""The EZproxy importer against hostile or careless input, and against its own past bugs: hosts of a
stanza dropped as a duplicate, devices and FIFOs as files, public suffixes as domains,
AnonymousURL rules wider than EZproxy's, NeverProxy schemes and ports, huge library networks,
invisible characters from joined files, quadratic slow-downs, version notes in titles and
personal LogFormat fields."""

from __future__ import annotations

import os
import threading
import tomllib
from pathlib import Path

import pytest

from proxy.ezproxy import ImportFailure, ImportResult, run_import
from proxy.ezproxy import tables as tables_mod
from proxy.ezproxy import urls as urls_mod
from proxy.ezproxy.convert import clean_title
from proxy.ezproxy.report import Finding, Kind
from tests.test_ezproxy_import import check_config, corpus_files


def convert(tmp: Path, text: str, groups: tuple[str, ...] = ("default",)) -> ImportResult:
    path = tmp / "config.txt"
    path.write_text(text, encoding="utf-8")
    return run_import([str(path)], groups)


def vendors(result: ImportResult) -> dict[str, dict[str, object]]:
    return {v["id"]: v for v in tomllib.loads(result.toml).get("vendor", [])}


def networks(result: ImportResult) -> list[dict[str, object]]:
    return list(tomllib.loads(result.toml).get("network", {}).get("library", []))


def found(result: ImportResult, kind: Kind | None = None, directive: str | None = None) -> list[Finding]:
    return [f for f in result.report.findings
            if (kind is None or f.kind is kind) and (directive is None or f.directive == directive)]


def served(result: ImportResult) -> tuple[set[str], set[str]]:
    """Every host name and domain the written vendor table serves."""
    hosts: set[str] = set()
    domains: set[str] = set()
    for vendor in vendors(result).values():
        for spec in vendor["hosts"]:  # type: ignore[attr-defined]
            hosts.add(str(spec).split("://")[-1].split(":")[0])
        domains.update(vendor.get("domains", []))  # type: ignore[arg-type]
    return hosts, domains


# ----------------------------------------------------------------------------------------------
# 1. A stanza dropped as a duplicate keeps the hosts no earlier database matches


def test_dropped_duplicate_keeps_its_other_hosts_in_the_keeper(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "Title Copac\nURL http://copac.jisc.example.ac.uk/\nDJ jisc.example.ac.uk\n"
        "Title Historical Texts\nURL http://historicaltexts.jisc.example.ac.uk/\n"
        "HJ historicaltexts.jisc.example.ac.uk\nHJ jischistoricbooks.example.com\n"
        "HJ www.jischistoricbooks.example.com\nDJ historicbooks-cdn.example.net\n"
    ))
    got = vendors(result)
    assert list(got) == ["copac"]
    hosts, domains = served(result)
    assert {"jischistoricbooks.example.com", "www.jischistoricbooks.example.com"} <= hosts
    assert "historicbooks-cdn.example.net" in domains
    message = next(f.message for f in found(result, Kind.DUPLICATE) if f.line == 4 and "start link" in f.message)
    assert "its start link works through 'copac'" in message
    assert "jischistoricbooks.example.com" in message and "kept in 'copac'" in message
    check_config(tmp_path, result.toml)


def test_dropped_duplicate_with_other_groups_keeps_a_vendor_of_its_own(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "Title Westlaw\nURL https://www.westlaw.example.com/\nDJ westlaw.example.com\n"
        "Group Law\n"
        "Title Westlaw Next\nURL https://next.westlaw.example.com/\nHJ https://lawschool.example.org\n"
        "HJ https://cite.example.org\n"
    ), groups=("wolcott",))
    got = vendors(result)
    assert got["westlaw"]["groups"] == ["wolcott"]
    own = got["westlaw-next"]
    assert own["groups"] == ["law"]
    assert own["hosts"] == ["https://lawschool.example.org", "https://cite.example.org"]
    assert own["start"] == "https://lawschool.example.org/"  # its own start is another vendor's host
    message = next(f.message for f in found(result, Kind.DUPLICATE) if f.line == 5 and "start link" in f.message)
    assert "kept in 'westlaw-next'" in message and "'https://lawschool.example.org/'" in message
    check_config(tmp_path, result.toml)


def test_dropped_duplicate_with_nothing_left_is_not_imported(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "Title A\nURL https://a.example.com/\nDJ a.example.com\n"
        "Title B\nURL https://b.a.example.com/\nHJ c.a.example.com\n"
    ))
    assert list(vendors(result)) == ["a"]
    message = next(f.message for f in found(result, Kind.DUPLICATE) if f.line == 4)
    assert "not imported" in message and "every other host" in message


def test_corpus_loses_no_host_of_a_dropped_duplicate() -> None:
    """Every host and domain of every stanza the corpus names is served by some vendor, or was
    taken by NeverProxy, or is refused with a finding (checked by the other tests)."""
    from proxy.ezproxy.convert import replay
    from proxy.ezproxy.parser import read_files
    from proxy.ezproxy.tables import finish

    files = [str(p) for p in corpus_files()]
    state = replay(read_files(files).directives, ("wolcott",))
    before = {id(s): (list(s.origins), list(s.domains)) for s in state.stanzas}
    conversion = finish(state)
    origins = {o for s in conversion.vendors for o in s.origins}
    domains = {d for s in conversion.vendors for d in s.domains}

    def covered(host: str) -> bool:
        labels = host.split(".")
        return any(".".join(labels[n:]) in domains for n in range(len(labels) - 1))

    lost = []
    for stanza in state.stanzas:
        if stanza.dropped.startswith("its starting point's host belongs"):
            was_origins, was_domains = before[id(stanza)]
            lost += [o.url for o in was_origins if o not in origins and not (o.default_port and covered(o.host))]
            lost += [d for d in was_domains if d not in domains and not covered(d)]
    assert lost == []


# ----------------------------------------------------------------------------------------------
# 2. Devices, FIFOs and oversized files


def test_include_of_a_device_is_refused_without_reading_it(tmp_path: Path) -> None:
    result = convert(tmp_path, "IncludeFile /dev/zero\nTitle A\nURL https://a.example.com/\n")
    errors = found(result, Kind.ERROR, "IncludeFile")
    assert errors and "not a regular file" in errors[0].message
    assert "a" in vendors(result)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(convert(tmp_path, f"IncludeFile {fifo.name}\nTitle A\nURL https://a.example.com/\n"))
            run_import([str(fifo)])
        except ImportFailure as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():  # unblock the reader so the test process can end
        with open(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK), "wb"):
            pass
        pytest.fail("reading a FIFO hung")
    first, second = outcome
    assert isinstance(first, ImportResult)
    assert "not a regular file" in found(first, Kind.ERROR, "IncludeFile")[0].message
    assert isinstance(second, ImportFailure) and "not a regular file" in str(second)


def test_device_named_on_the_command_line_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ImportFailure, match="not a regular file"):
        run_import(["/dev/zero"])


def test_file_growing_past_the_limit_is_read_no_further(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy.ezproxy import parser

    monkeypatch.setattr(parser, "MAX_FILE_BYTES", 64)
    path = tmp_path / "big.txt"
    path.write_text("Title A\nURL https://a.example.com/\n" * 10, encoding="utf-8")
    with pytest.raises(ImportFailure):
        run_import([str(path)])
    monkeypatch.setattr(parser, "_unreadable", lambda p: None)  # as if it grew after the size check
    with pytest.raises(ImportFailure, match="more than 64 bytes"):
        run_import([str(path)])


# ----------------------------------------------------------------------------------------------
# 3. Public suffixes and addresses as domains


@pytest.mark.parametrize("line", ["D co.uk", "DJ .ac.uk", "Domain com.au", "D 10.1.2.3", "H *.gov.uk",
                                  "D https://edu.au/", "D CO.JP"])
def test_public_suffix_or_address_domain_is_refused(tmp_path: Path, line: str) -> None:
    result = convert(tmp_path, f"Title A\nURL https://www.a.example.co.uk/\n{line}\n")
    assert "domains" not in vendors(result)["a"]
    errors = [f for f in found(result, Kind.ERROR) if f.line == 3]
    assert errors, line
    assert not [f for f in found(result, Kind.NOTE) if f.line == 3]  # no "carried over as the domain"


def test_a_vendor_domain_under_a_public_suffix_is_kept(tmp_path: Path) -> None:
    result = convert(tmp_path, "Title A\nURL https://www.a.example.co.uk/\nD example.co.uk\nD jisc.ac.uk\n")
    assert vendors(result)["a"]["domains"] == ["example.co.uk", "jisc.ac.uk"]
    assert len(urls_mod.PUBLIC_SUFFIXES) >= 30


# ----------------------------------------------------------------------------------------------
# 4. AnonymousURL: never more than EZproxy opened


def test_anonymous_rules_wider_as_paths_are_not_carried(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "AnonymousURL +https://one.example.com/open?*\n"
        "Title One\nURL https://one.example.com/\nAnonymousURL -*\n"
        "AnonymousURL +http://two.example.com/feeds/*\n"
        "Title Two\nURL https://two.example.com/\nH two.example.com\nAnonymousURL -*\n"
        "AnonymousURL +https://three.example.com:8443/api/*\n"
        "Title Three\nURL https://three.example.com/\nH https://three.example.com:8443\nAnonymousURL -*\n"
        "AnonymousURL +https://four.example.com/api/*\n"
        "Title Four\nURL https://four.example.com/\nAnonymousURL -*\n"
        "AnonymousURL +https://five.example.com:8443/api/*\n"
        "Title Five\nURL https://five.example.com:8443/\nAnonymousURL -*\n"
        "AnonymousURL +*.css\n"
        "Title Six\nURL https://six.example.com/\nAnonymousURL -*\n"
    ))
    got = vendors(result)
    for name in ("one", "two", "three", "six"):
        assert "anonymous_paths" not in got[name], name
    assert got["four"]["anonymous_paths"] == ["/api/*"]
    assert got["five"]["anonymous_paths"] == ["/api/*"]
    refused = {f.line: f.message for f in found(result, Kind.NO_EQUIVALENT, "AnonymousURL")}
    assert "query string" in refused[1]
    assert "http://two.example.com" in refused[5] and "https://two.example.com" in refused[5]
    assert "https://three.example.com" in refused[10]
    assert "does not end with *" in refused[23]
    check_config(tmp_path, result.toml)


# ----------------------------------------------------------------------------------------------
# 5. NeverProxy: scheme, port, and domains, with messages that agree


def test_never_proxy_scheme_port_and_domain(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "Title NP\nURL https://start.np.example.com/\nHJ www.np.example.com\nHJ https://api.np.example.com:8443\n"
        "DJ np.example.com\n"
        "NeverProxy www.np.example.com\nNeverProxy api.np.example.com:8443\nNeverProxy http://start.np.example.com\n"
        "Title Other\nURL https://other.example.org/\nHJ www.other.example.org\n"
        "NeverProxy http://www.other.example.org\n"
    ))
    got = vendors(result)
    assert got["np"]["start"] == "https://start.np.example.com/"  # an http-only NeverProxy: still imported
    assert "https://api.np.example.com:8443" not in got["np"]["hosts"]  # type: ignore[operator]
    assert got["other"]["hosts"] == ["https://other.example.org", "https://www.other.example.org"]
    by_line: dict[int, list[Finding]] = {}
    for f in found(result, directive="NeverProxy"):
        by_line.setdefault(f.line, []).append(f)
    # Under the domain: proxied, and said so once; never also "left out".
    assert [f.kind for f in by_line[6]] == [Kind.NO_EQUIVALENT] and "will be proxied" in by_line[6][0].message
    assert [f.kind for f in by_line[7]] == [Kind.NOTE] and "left out" in by_line[7][0].message
    assert [f.kind for f in by_line[8]] == [Kind.NO_EQUIVALENT] and "will be proxied" in by_line[8][0].message
    assert [f.kind for f in by_line[12]] == [Kind.NOTE] and "http://www.other.example.org" in by_line[12][0].message
    check_config(tmp_path, result.toml)


def test_never_proxy_of_a_start_speaks_of_no_removed_vendor(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "Title OECD\nURL https://www.oecd-lib.example.org/\nHJ https://www.oecd.example.org\nDJ oecd.example.org\n"
        "NeverProxy data.oecd.example.org\nNeverProxy *.oecd-lib.example.org\n"
    ))
    assert vendors(result) == {}
    messages = {f.line: f.message for f in found(result, directive="NeverProxy")}
    assert "not imported" in messages[6]
    assert "will be proxied" not in messages[5]


# ----------------------------------------------------------------------------------------------
# 6. Library networks: never the internet, never more groups


def test_huge_address_ranges_are_refused(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "AutoLoginIP 0.0.0.0-255.255.255.255\nExcludeIP 0.0.0.0/1\nA 2000::/3\nA 10.0.0.0/8\n"
        "Title A\nURL https://a.example.com/\n"
    ))
    errors = {f.line for f in found(result, Kind.ERROR)}
    assert errors == {1, 2, 3}
    assert networks(result) == [{"name": "ezproxy-autologin", "cidrs": ["10.0.0.0/8"], "groups": ["default"]}]


def test_excludeip_network_never_widens_groups(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "Group Law\nTitle Law\nURL https://law.example.com/\n"
        "Group Default\nAutoLoginIP 192.0.2.0/24\nExcludeIP 172.16.0.0/12\n"
        "Title D\nURL https://d.example.com/\n"
    ), groups=("wolcott",))
    nets = {n["name"]: n for n in networks(result)}
    assert nets["ezproxy-excludeip"]["groups"] == ["wolcott"]
    assert all("law" not in n["groups"] for n in nets.values())  # type: ignore[operator]


# ----------------------------------------------------------------------------------------------
# 7. Invisible characters from joined files; odd names shown as written


def test_mid_file_byte_order_mark_and_zero_width_space(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "Title First\nURL https://first.example.com/\n"
        "\ufeffTitle Second\nURL https://second.example.com/\n"
        "\u200bHJ cdn.second.example.com\n"
        "\u200bFrobnicate\u200b x\n"
    ))
    got = vendors(result)
    assert got["second"]["hosts"] == ["https://second.example.com", "cdn.second.example.com"]
    notes = {f.line for f in found(result, Kind.NOTE, "(file)")}
    assert {3, 5, 6} <= notes
    unknown = found(result, Kind.NO_EQUIVALENT)
    assert any("'Frobnicate\\u200b'" in f.message for f in unknown), unknown


# ----------------------------------------------------------------------------------------------
# 8. Linear work


def test_many_stanzas_with_rules_never_cleared_import_quickly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3,000 stanzas each adding an AnonymousURL rule with no "-*", NeverProxy lines and one
    title repeated: the work per stanza is bounded (counted, not timed)."""
    calls = {"pattern": 0, "glob": 0}
    real_pattern, real_glob = urls_mod.anonymous_pattern, tables_mod.host_glob_matches

    def counting_pattern(wildurl: str) -> tuple[urls_mod.AnonPattern | None, str]:
        calls["pattern"] += 1
        return real_pattern(wildurl)

    def counting_glob(glob: str, host: str) -> bool:
        calls["glob"] += 1
        return real_glob(glob, host)

    monkeypatch.setattr(tables_mod, "anonymous_pattern", counting_pattern)
    monkeypatch.setattr(tables_mod, "host_glob_matches", counting_glob)
    tables_mod._pattern_of.cache_clear()
    n = 3000
    parts = [f"Title Same\nURL https://www.v{i}.example.com/\nHJ cdn.v{i}.example.com\nDJ v{i}.example.com\n"
             f"AnonymousURL +https://api.v{i}.example.com/*\n" for i in range(n)]
    parts += [f"NeverProxy x{i}.v{i}.example.com\n" for i in range(n // 5)]
    result = convert(tmp_path, "".join(parts))
    tables_mod._pattern_of.cache_clear()
    assert len(result.report.vendors) == n
    assert calls["pattern"] <= 2 * n  # each rule parsed once, not once per stanza it is in force for
    assert calls["glob"] <= 70 * 5 * n  # at most MAX_ANON_IN_FORCE rules in force, a few hosts each
    assert any("more than 64 AnonymousURL rules" in f.message for f in found(result, Kind.NO_EQUIVALENT))


def test_add_origins_keeps_its_set() -> None:
    from proxy.ezproxy.convert import Stanza
    from proxy.ezproxy.iprange import RangeSet
    from proxy.vendors import Origin

    stanza = Stanza("a", "A", "f", 1, ("g",), False, (), RangeSet(), RangeSet())
    for i in range(2000):
        stanza.add_origins((Origin("https", f"h{i}.example.com", 443), Origin("https", "h0.example.com", 443)))
    assert len(stanza.origins) == 2000
    known = stanza._known
    stanza.add_origins((Origin("https", "new.example.com", 443),))
    assert stanza._known is known  # not rebuilt per call
    stanza.origins = [stanza.origins[0]]  # replaced elsewhere: seen afresh
    stanza.add_origins((Origin("https", "h5.example.com", 443),))
    assert len(stanza.origins) == 2


# ----------------------------------------------------------------------------------------------
# 9, 10. Version notes in titles; personal LogFormat fields


@pytest.mark.parametrize(("raw", "clean"), [
    ("Alexander Street Press (OCLC IncludeFile updated 20210805)", "Alexander Street Press"),
    ("ASM International (20250331)", "ASM International"),
    ("Aida Updated 20220728)", "Aida"),
    ("Digital Concert Hall(OCLC IncludeFile updated 20220809)", "Digital Concert Hall"),
    ("Metropolitan Opera on Demand (vendor update 20231107)", "Metropolitan Opera on Demand"),
    ("Pidgeon Digital (Created 20231206)", "Pidgeon Digital"),
    ("Copac (updated 20151007)", "Copac"),
    ("Census 2020", "Census 2020"),
    ("Report 20200101", "Report 20200101"),
])
def test_version_notes_are_stripped_from_titles(raw: str, clean: str) -> None:
    assert clean_title(raw)[0] == clean


def test_corpus_titles_carry_no_version_notes() -> None:
    result = run_import([str(p) for p in corpus_files()], ("wolcott",))
    noisy = [v.title for v in result.report.vendors
             if any(w in v.title.lower() for w in ("updated", "includefile")) or "(20" in v.title]
    assert noisy == []


def test_log_format_with_session_or_forwarded_address_is_privacy(tmp_path: Path) -> None:
    result = convert(tmp_path, (
        "LogFormat %t %{ezproxy-session}i %r\nLogFormat %t %{X-Forwarded-For}i\nLogFormat %t %r %{User-Agent}i\n"
    ))
    assert {f.line for f in found(result, Kind.PRIVACY)} == {1, 2}
    assert {f.line for f in found(result, Kind.DEFAULT)} == {3}


def test_groups_are_lower_cased_and_a_name_with_a_space_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    stanza = tmp_path / "config.txt"
    stanza.write_text("Title Demo\nURL https://www.demo-vendor.example/\nDJ demo-vendor.example\n", encoding="utf-8")
    out = tmp_path / "vendors.toml"
    ok = subprocess.run([sys.executable, "-m", "proxy", "import-ezproxy", str(stanza), "--groups", " Wolcott , BIBLIO",
                         "--out", str(out), "--report", str(tmp_path / "r.txt")],
                        capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    assert '"wolcott"' in out.read_text() and '"biblio"' in out.read_text()
    bad = subprocess.run([sys.executable, "-m", "proxy", "import-ezproxy", str(stanza), "--groups", "Biblio Mation",
                          "--out", str(tmp_path / "other.toml")], capture_output=True, text=True, timeout=60,
                         check=False)
    assert bad.returncode == 1 and "'biblio mation' is not a group name" in bad.stderr
