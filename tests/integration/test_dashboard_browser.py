"""The dashboard in headless Chromium (Debian's package, driven by Playwright through
``executable_path``; never a downloaded browser), over a real ``tboot-py serve`` with real swtpm
agents; then the compliance reports and ``audit recheck`` on the database they filled, and on
a copy with one stored result tampered with.

Screenshots of the overview and a host page are written on every run; ``make screenshots``
(TBOOT_PY_SCREENSHOTS=DIR) keeps them for a person to look at.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tboot_py.server._harness import Server, start_server
from tests.conftest import run_cli
from tests.integration.server_harness import HostTPM, hosts, json_out, make_artifacts, ok

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"


@dataclass
class Fleet:
    srv: Server
    hosts: list[HostTPM]
    db: Path
    failing_result: int
    dir: Path

    def fleet_cli(self, *argv: str) -> Any:
        r = ok(run_cli("fleet", *argv, "--server", self.srv.url, "--admin-token-file",
                       str(self.dir / "server" / "admin-token"), "--json"))
        return json.loads(r.out)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, ca_dir: Path) -> Iterator[Fleet]:
    """Three swtpm hosts: host0 passing, host1 failing (another kernel), host2 stale."""
    base = tmp_path_factory.mktemp("dash")
    art = make_artifacts(base / "artifacts")
    with hosts(base, ca_dir, 3, art) as hs:
        srv = start_server(base / "server", "--ek-roots", str(ca_dir), "--trust-key", str(art.pub),
                           "--interval", "300")
        f = Fleet(srv, hs, base / "server" / "server.sqlite", 0, base)
        try:
            for h in hs:
                assert h.agent_once([srv.url]).returncode == 1  # enrolled, no policy yet
                f.fleet_cli("set", h.name, "--group", "lab")
            f.fleet_cli("policy", "set", "group", "lab", str(art.policy))
            assert [h.agent_once([srv.url]).returncode for h in hs] == [0, 0, 0]
            evil = base / "evil-vmlinuz"
            evil.write_bytes(b"another kernel " * 4096)
            hs[1].extend(evil, art.initrd)
            bad = hs[1].agent_once([srv.url])
            assert bad.returncode == 1, bad.stderr
            f.failing_result = int(json_out(bad)["result_id"])
            f.fleet_cli("set", hs[2].name, "--interval", "1")  # misses it: the sweep marks it stale
            for _ in range(100):
                if {h["name"]: h["state"] for h in f.fleet_cli("hosts")["hosts"]}[hs[2].name] == "stale":
                    break
                import time

                time.sleep(0.1)
            yield f
        finally:
            srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "chromium is not installed (Debian package chromium; make setup installs it)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                "--disable-background-networking",
                                                                "--disable-component-update", "--disable-sync"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, fleet: Fleet) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.goto(fleet.srv.url + "/")
    assert "/login" in pg.url
    pg.fill("#token", fleet.srv.token)
    pg.keyboard.press("Enter")
    pg.wait_for_url(fleet.srv.url + "/")
    try:
        yield pg
    finally:
        ctx.close()


def _shot(pg: Any, name: str, tmp_path: Path) -> None:
    out = tmp_path / name
    pg.screenshot(path=str(out), full_page=True)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    keep = os.environ.get("TBOOT_PY_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(keep) / name)


def test_overview_lists_the_hosts_with_their_states(page: Any, fleet: Fleet, tmp_path: Path) -> None:
    rows = page.locator("table.hosts tbody tr")
    states = {rows.nth(i).locator("th").inner_text(): rows.nth(i).locator(".state .label").inner_text()
              for i in range(rows.count())}
    assert states == {"host0": "passing", "host1": "failing", "host2": "stale"}
    # Each state is a word and an icon shape, not a colour only.
    assert page.locator("tr.row-failing .state svg rect").count() == 1
    assert page.locator("tr.row-passing .state svg circle").count() == 1
    counts = page.locator("ul.counts").inner_text()
    for text in ("3 hosts", "1 passing", "1 failing", "1 stale"):
        assert text in " ".join(counts.split()), counts
    # The policy digest is abbreviated on one line, with the full value on hover.
    digest = page.locator("table.hosts tbody tr").first.locator("code.digest")
    assert len(digest.get_attribute("title")) == 64
    box = digest.bounding_box()
    assert box is not None and box["height"] < 30  # one line
    _shot(page, "overview.png", tmp_path)
    page.get_by_role("link", name="failing").first.click()
    assert page.locator("table.hosts tbody tr").count() == 1


def test_keyboard_reaches_every_host(page: Any, fleet: Fleet) -> None:
    reached: list[str] = []
    page.locator("body").focus()
    for _ in range(60):
        page.keyboard.press("Tab")
        href = page.evaluate("document.activeElement && document.activeElement.getAttribute('href')")
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        if href and href.startswith("/host/"):
            reached.append(href)
            assert outline != "none", f"no focus style on {href}"
    assert {"/host/host0", "/host/host1", "/host/host2"} <= set(reached)
    # Enter on a focused host link opens its page.
    page.focus("a[href='/host/host1']")
    page.keyboard.press("Enter")
    page.wait_for_url("**/host/host1")
    assert page.locator("h1").inner_text().startswith("host1")


def test_host_page_shows_the_failing_reason_with_both_digests(page: Any, fleet: Fleet, tmp_path: Path) -> None:
    stored = fleet.fleet_cli("result", str(fleet.failing_result))
    failed = [r for r in stored["appraisal"]["verdict"]["reasons"] if not r["passed"] and r["actual"]]
    assert failed
    page.goto(fleet.srv.url + "/host/host1")
    section = page.locator("section[aria-labelledby='h-failure']")
    text = section.inner_text()
    for r in failed:
        assert r["actual"] in text
        assert all(e in text for e in r["expected"])
    # Full digests on one line each.
    for code in section.locator("td.digests code.digest").all():
        box = code.bounding_box()
        assert box is not None and box["height"] < 30 and len(code.inner_text()) in (40, 64, 96, 128)
    assert page.locator("figure.timeline svg .pt-fail").count() >= 1
    assert page.locator("figure.timeline svg .pt-pass").count() >= 1
    assert page.locator("table.events tr.used").count() >= 1
    assert "Signature verified" in page.locator("section[aria-labelledby='h-ear']").inner_text()
    _shot(page, "host.png", tmp_path)


def test_reports_and_recheck_on_the_real_database(fleet: Fleet, tmp_path: Path) -> None:
    db = tmp_path / "copy.sqlite"
    with sqlite3.connect(fleet.db) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    same = run_cli("audit", "recheck", "--db", str(db), "--json")
    assert same.rc == 0, same.out + same.err
    out = json.loads(same.out)
    assert out["differ"] == 0 and out["checked"] >= 7
    rep = run_cli("audit", "report", "--db", str(db), "--host", "host1", "--format", "json")
    assert rep.rc == 0, rep.err
    r = json.loads(rep.out)
    assert r["covers"]["host"] == "host1" and r["summary"]["recomputed_differ"] == 0
    failing = next(x for x in r["results"] if x["id"] == fleet.failing_result)
    assert failing["failed"] and all(f["expected"] and f["actual"] for f in failing["failed"] if f["component"])
    assert len(failing["evidence_sha256"]) == 64 and r["policies"][0]["digest"] == failing["policy_digest"]
    html = run_cli("audit", "report", "--db", str(db), "--fleet", "--format", "print")
    assert html.rc == 0 and "@page" in html.out and "audit recheck --db" in html.out
    assert 'class="digest"' in html.out and "break-all" not in html.out

    # Someone turns host1's denial into a pass in the database: recheck names it, exit 1.
    with sqlite3.connect(db) as c:
        c.execute("UPDATE results SET allowed = 1, status = 'affirming', reason = 'allowed' WHERE id = ?",
                  (fleet.failing_result,))
    bad = run_cli("audit", "recheck", "--db", str(db))
    assert bad.rc == 1
    assert f"result {fleet.failing_result} (host1): DIFFERS: decision: stored allowed, recomputed denied" in bad.out
    assert "EAR status" in bad.out
    flagged = json.loads(run_cli("audit", "report", "--db", str(db), "--host", "host1", "--format", "json").out)
    assert flagged["summary"]["recomputed_differ"] == 1


def test_forms_work_in_the_browser_and_logout_ends_the_session(page: Any, fleet: Fleet) -> None:
    """The re-appraise button (a CSRF-checked POST) from the keyboard, then logging out."""
    page.goto(fleet.srv.url + "/host/host0")
    before = page.locator("table.results tbody tr").count()
    page.focus("form[action$='/reappraise'] button")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith("/host/host0"), page.content()[:2000]
    assert page.locator("table.results tbody tr").count() == before + 1
    assert page.locator("table.results tbody tr").first.locator("td").nth(2).inner_text() == "reappraise"
    page.click("header form.logout button")
    page.wait_for_url("**/login")
    page.goto(fleet.srv.url + "/")
    assert "/login" in page.url
