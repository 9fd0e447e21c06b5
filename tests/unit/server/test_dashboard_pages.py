"""The dashboard's pages over a small fleet database: login and session, CSRF, overview
filters and sorting, the host page (failing reason with both digests, events the rules used,
timeline), policy pages and diff, the audit trail page, and digests that never wrap."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tboot_py.server.app import create_app
from tboot_py.server.web import SESSION_COOKIE, Sessions
from tests.unit.server.fleetdb import KERNEL_EVIL, KERNEL_GOOD, Fleet, make_fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return make_fleet(tmp_path)


@pytest.fixture
def client(fleet: Fleet, tmp_path: Path) -> Iterator[TestClient]:
    from tboot_py.audit.records import append_record

    log = tmp_path / "audit.jsonl"
    append_record(log, {"time": "2026-01-01T00:00:00Z", "decision": "allow", "dry_run": True, "exit_code": 0,
                        "reasons": ["dry run"]})
    append_record(log, {"time": "2026-01-01T00:01:00Z", "decision": "deny", "exit_code": 1,
                        "reasons": ["kernel digest not in the policy"], "anchor": {"pcr": 15, "boot": [3, 0]}})
    app = create_app(fleet.service, fleet.token, scheduler=False, audit_logs=[log])
    with TestClient(app, base_url="http://testserver") as c:
        yield c


def login(c: TestClient, token: str) -> None:
    r = c.post("/login", content=f"token={token}&next=/", headers={"content-type": "application/x-www-form-urlencoded"},
               follow_redirects=False)
    assert r.status_code == 303, r.text
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert m, html
    return m.group(1)


def test_pages_need_a_session(client: TestClient, fleet: Fleet) -> None:
    for path in ("/", "/host/alpha", "/policies", "/audit", f"/result/{fleet.failing_result}.json"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
    bad = client.post("/login", content="token=wrong-token&next=/",
                      headers={"content-type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert bad.status_code == 401 and "not the admin token" in bad.text
    assert SESSION_COOKIE not in client.cookies
    # A forged or expired session is no session.
    client.cookies.set(SESSION_COOKIE, "9999999999.abc." + "0" * 64)
    assert client.get("/", follow_redirects=False).status_code == 303
    client.cookies.set(SESSION_COOKIE, Sessions(fleet.token).issue(now=0))
    assert client.get("/", follow_redirects=False).status_code == 303
    # An open redirect after login is refused.
    r = client.post("/login", content=f"token={fleet.token}&next=//evil.example/",
                    headers={"content-type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert r.headers["location"] == "/"


def test_overview_counts_filters_and_sorts(client: TestClient, fleet: Fleet) -> None:
    login(client, fleet.token)
    r = client.get("/")
    assert r.status_code == 200
    assert "default-src 'none'" in r.headers["content-security-policy"]
    html = r.text
    assert "<script" not in html and "http://" not in html.replace("http://testserver", "")
    rows = re.findall(r'<tr class="row-(\w+)">\s*<th scope="row"><a class="host-link" href="/host/(\w+)"', html)
    assert rows == [("passing", "alpha"), ("failing", "bravo"), ("stale", "charlie"), ("pending", "delta"),
                    ("enrolled", "echo")]
    # Counts at the top, each state with its word (never colour alone).
    for state in ("passing", "failing", "stale", "pending", "enrolled"):
        assert re.search(rf'class="count count-{state}".*?<span class="n">1</span> {state}</a>', html, re.S)
    assert re.search(r'<span class="state state-failing"><svg[^>]*>.*?</svg><span class="label">failing</span>',
                     html, re.S)
    only_failing = client.get("/?state=failing").text
    assert "/host/bravo" in only_failing and "/host/alpha" not in only_failing
    assert "/host/bravo" in client.get("/?q=rav").text and "/host/alpha" not in client.get("/?q=rav").text
    desc = client.get("/?sort=name&dir=desc").text
    assert desc.index("/host/echo") < desc.index("/host/alpha")
    assert 'aria-sort="descending"' in desc
    by_last = client.get("/?sort=last&dir=desc").text
    assert by_last.index("/host/bravo") < by_last.index("/host/alpha")
    assert "/host/alpha" in client.get("/?state=bogus&sort=bogus").text  # unknown filters are ignored


def test_host_page_shows_the_failure_with_both_digests(client: TestClient, fleet: Fleet) -> None:
    login(client, fleet.token)
    html = client.get("/host/bravo").text
    failure = html[html.index('id="h-failure"'):html.index('id="h-pcrs"')]
    assert "kernel digest not in the policy" in failure
    assert f'<code class="digest full">{KERNEL_GOOD}</code>' in failure
    assert f'<code class="digest full">{KERNEL_EVIL}</code>' in failure
    assert "sha256 / PCR 8" in failure
    # The event the rule used is marked; the abbreviated digest carries the full value.
    log = html[html.index('id="h-log"'):html.index('id="h-events"')]
    assert '<tr class="used">' in log and "rules[0] (component)" in log
    assert f'title="{KERNEL_EVIL}"' in log and "tboot-py kernel (file) /boot/vmlinuz" in log
    assert "example-quirk" in html
    # The timeline: one circle (pass) and one cross (fail), each with a title.
    svg = html[html.index("<svg width="):html.index("</svg>", html.index("<svg width="))]
    assert svg.count('class="pt-pass"') == 1 and svg.count('class="pt-fail"') == 1
    assert "1 passed (circles, upper row), 1 failed (crosses, lower row)" in svg
    j = client.get(f"/result/{fleet.failing_result}.json").json()
    assert j["appraisal"]["verdict"]["reasons"][0]["actual"] == KERNEL_EVIL
    assert client.get("/host/nobody").status_code == 404
    assert client.get("/result/99999999999999999999999.json").status_code == 404
    assert client.get("/result/0.json").status_code == 404
    assert client.get("/host/..%2Fx").status_code == 404


def test_post_needs_csrf_and_same_origin(client: TestClient, fleet: Fleet) -> None:
    login(client, fleet.token)
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert client.post("/host/bravo/reappraise", content="csrf=" + "0" * 64, headers=form).status_code == 403
    token = csrf_of(client.get("/host/bravo").text)
    evil = client.post("/host/bravo/reappraise", content=f"csrf={token}",
                       headers={**form, "origin": "http://evil.example"})
    assert evil.status_code == 403
    # With the right token the request reaches the service (this evidence has no real quote:
    # re-appraisal denies it, and the host stays failing).
    ok = client.post("/host/bravo/reappraise", content=f"csrf={token}",
                     headers={**form, "origin": "http://testserver"}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/host/bravo"
    out = client.post("/logout", content=f"csrf={token}", headers=form, follow_redirects=False)
    assert out.status_code == 303 and 'Max-Age=0' in out.headers["set-cookie"]


def test_policy_pages_and_diff(client: TestClient, fleet: Fleet) -> None:
    login(client, fleet.token)
    html = client.get("/policies").text
    assert "group/lab" in html and "v2" in html and "v1" in html
    assert 'href="/host/alpha"' in html
    diff = client.get("/policy/group/lab?a=1&b=2").text
    assert '<span class="d d-add">+  &#34;name&#34;: &#34;v2&#34;' in diff
    assert client.get("/policy/group/none").status_code == 404
    assert client.get("/policy/bogus/lab").status_code == 404


def test_audit_trail_page(client: TestClient, fleet: Fleet) -> None:
    login(client, fleet.token)
    html = client.get("/audit").text
    assert "Hash chain intact: 2 record(s), 0 launch(es), 1 denied, 1 dry run(s)" in html
    head = re.search(r'Chain head</dt><dd><code class="digest full">([0-9a-f]{64})</code>', html)
    assert head and f"--expect-head {head.group(1)}" in html
    assert "kernel digest not in the policy" in html and 'href="/host/bravo"' in html
    assert "PCR 15, TPM boot (resetCount, restartCount) 3, 0" in html and "--audit-pcr 15" in html


def test_stylesheet_keeps_digests_on_one_line(client: TestClient) -> None:
    css = client.get("/static/dashboard.css").text
    rule = css[css.index("code.digest {"):css.index("}", css.index("code.digest {"))]
    assert "white-space: nowrap" in rule and "@media print" in css and "focus-visible" in css
    assert "url(" not in css and "@import" not in css  # nothing fetched from elsewhere
