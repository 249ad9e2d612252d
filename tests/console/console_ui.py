"""The incident console in a real browser: Debian's Chromium, headless,
driven by selenium through chromedriver. Run by tests/tests/console.rs,
which starts ledgerd, writes the events and passes what it knows as a JSON
file:

    python3 console_ui.py main FILE      sign-in, search, trace, follow, redaction,
                                         downloads, an altering proxy, other tenant
    python3 console_ui.py tampered FILE  a stored entry changed: marked failed
    python3 console_ui.py render FILE    time to a verified render (benchmark)

Every check raises AssertionError with what it saw."""

import base64
import http.client
import http.server
import json
import os
import pathlib
import sys
import threading
import time
import urllib.parse

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

WAIT = 30


def browser(downloads=None):
    o = webdriver.ChromeOptions()
    o.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000",
              "--disable-gpu", "--no-first-run"]:
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if downloads:
        o.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                            "download.prompt_for_download": False})
    d = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=o)
    if downloads:
        d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return d


def wait(d, what, cond, timeout=WAIT):
    try:
        return WebDriverWait(d, timeout, poll_frequency=0.05).until(lambda _: cond())
    except Exception:
        logs = [l["message"] for l in d.get_log("browser")]
        raise AssertionError(f"timed out waiting for {what}; banner={text(d, 'banner')!r}; "
                             f"page={d.find_element(By.TAG_NAME, 'body').text[:800]!r}; console={logs}")


def text(d, id_):
    try:
        return d.find_element(By.ID, id_).text
    except Exception:
        return ""


def sign_in(d, url, api_key, vkey):
    d.get(url)
    wait(d, "the sign-in form", lambda: d.find_element(By.ID, "signin-view").is_displayed()
         or d.find_element(By.ID, "search-view").is_displayed())
    if d.find_element(By.ID, "search-view").is_displayed():
        d.find_element(By.ID, "sign-out").click()
    key = d.find_element(By.ID, "signin-key")
    key.clear()
    key.send_keys(api_key)
    v = d.find_element(By.ID, "signin-vkey")
    v.clear()
    v.send_keys(vkey)
    d.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]").click()
    wait(d, "the search view after sign-in", lambda: d.find_element(By.ID, "search-view").is_displayed())
    # The API key is in session storage only.
    if api_key:
        assert d.execute_script("return sessionStorage.getItem('agent-ledger.api-key')") == api_key
        assert api_key not in json.dumps(d.execute_script("return Object.assign({}, localStorage)"))


def rows(d, selector):
    return [(r.get_attribute("data-index"), r.get_attribute("data-status"), r.get_attribute("data-kind"))
            for r in d.find_elements(By.CSS_SELECTOR, selector)]


def open_trace(d, url, trace, expect):
    d.get(url + "#/trace/" + trace)
    d.refresh()
    wait(d, f"{expect} waterfall rows", lambda: d.execute_script("return document.body.dataset.ready") == "trace"
         and len(d.find_elements(By.CSS_SELECTOR, ".wf-row")) >= expect)
    return rows(d, ".wf-row")


def select_row(d, index):
    d.find_element(By.CSS_SELECTOR, f'.wf-row[data-index="{index}"]').click()
    wait(d, f"the detail of entry {index}", lambda: "entry #" + str(index) in text(d, "detail")
         or "FAILED" in text(d, "detail"))
    return text(d, "detail")


# ---------------------------------------------------------------------------
# An HTTP proxy that alters what the server says
# ---------------------------------------------------------------------------

def altering_proxy(upstream, alter):
    host, port = upstream.split(":")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            c = http.client.HTTPConnection(host, int(port), timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "accept-encoding")}
            c.request("GET", self.path, headers=headers)
            r = c.getresponse()
            body = r.read()
            if "/api/v1/traces/" in self.path and r.status == 200:
                doc = json.loads(body)
                alter(doc)
                body = json.dumps(doc).encode()
            self.send_response(r.status)
            for k, v in r.getheaders():
                if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(k, v)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def swap_bytes(b64, old, new):
    raw = base64.b64decode(b64)
    assert old in raw, (old, raw)
    return base64.b64encode(raw.replace(old, new, 1)).decode()


# ---------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------

def main_phase(cfg):
    url = cfg["console"]
    trace = cfg["trace"]
    shots = pathlib.Path(cfg["screenshots"])
    downloads = pathlib.Path(cfg["downloads"])
    d = browser(downloads)
    try:
        # Sign in; search by agent; the view is a link.
        sign_in(d, url, cfg["reader"], cfg["vkey"])
        form = d.find_element(By.ID, "search-form")
        form.find_element(By.NAME, "agent_id").send_keys(cfg["agent"])
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait(d, "search results", lambda: "agent_id=" in d.current_url
             and len(d.find_elements(By.CSS_SELECTOR, "#results tbody tr")) == cfg["agent_events"])
        found = rows(d, "#results tbody tr")
        assert all(s == "verified" for _, s, _ in found), found
        cells = [r.find_elements(By.TAG_NAME, "td")[4].text for r in d.find_elements(By.CSS_SELECTOR, "#results tbody tr")]
        assert set(cells) == {cfg["agent"]}, cells
        link = d.current_url
        d.save_screenshot(str(shots / "console-search.png"))
        # The pasted link shows the same view.
        d.get("about:blank")
        d.get(link)
        wait(d, "the linked search", lambda: len(d.find_elements(By.CSS_SELECTOR, "#results tbody tr")) == cfg["agent_events"])
        assert d.find_element(By.NAME, "agent_id").get_attribute("value") == cfg["agent"]

        # Paging: pages of 2 cover the agent's events once each, in order.
        d.get(url + "#/search?agent_id=" + cfg["agent"] + "&page_size=2")
        seen = []
        for _ in range(20):
            wait(d, "a page", lambda: d.execute_script("return document.body.dataset.ready") == "search"
                 and len(d.find_elements(By.CSS_SELECTOR, "#results tbody tr")) > 0)
            page = [int(i) for i, _, _ in rows(d, "#results tbody tr")]
            seen += page
            nxt = d.find_element(By.ID, "page-next")
            if not nxt.is_displayed():
                break
            d.execute_script("document.body.dataset.ready = ''")
            nxt.click()
        assert seen == sorted(seen) and len(seen) == cfg["agent_events"] == len(set(seen)), seen

        # Open a trace from the results: nested spans, every event in order, verified.
        d.get(url + "#/search?correlation_id=" + trace)
        wait(d, "the trace's events", lambda: len(d.find_elements(By.CSS_SELECTOR, "#results tbody tr a")) > 0)
        d.find_element(By.CSS_SELECTOR, "#results tbody tr a").click()
        wait(d, "the waterfall", lambda: d.execute_script("return document.body.dataset.ready") == "trace"
             and len(d.find_elements(By.CSS_SELECTOR, ".wf-row")) == len(cfg["order"]))
        wf = rows(d, ".wf-row")
        assert [int(i) for i, _, _ in wf] == cfg["order"], (wf, cfg["order"])
        assert all(s == "verified" for _, s, _ in wf), wf
        kinds = {k for _, _, k in wf}
        for k in ("approval_granted", "approval_denied", "policy_violation", "kill_switch"):
            assert k in kinds, (k, kinds)
            assert d.find_elements(By.CSS_SELECTOR, f".wf-row.m-{k} .marker"), f"no marker for {k}"
        depth = {r.get_attribute("data-index"): r.find_element(By.CSS_SELECTOR, ".wf-label").value_of_css_property("padding-left")
                 for r in d.find_elements(By.CSS_SELECTOR, ".wf-row")}
        assert len(set(depth.values())) >= 3, f"nested spans are not indented: {depth}"
        assert "✓ checkpoint" in text(d, "checkpoint-status"), text(d, "checkpoint-status")
        assert not d.find_element(By.ID, "banner").is_displayed()

        # The detail pane: every field, attributes, the payload pretty-printed.
        detail = select_row(d, cfg["payload_index"])
        assert "Verified" in detail and cfg["payload_key"] in detail, detail
        pre = d.find_element(By.CSS_SELECTOR, "#detail pre[data-payload]").text
        assert json.loads(pre) and "\n  " in pre, pre
        for k, v in cfg["attributes"].items():
            assert k in detail and v in detail, (k, v, detail)
        # A redacted payload: shown as redacted, with who and why, verified.
        detail = select_row(d, cfg["redacted_index"])
        red = d.find_element(By.CSS_SELECTOR, "#detail [data-redacted]").text
        assert "Payload redacted" in red and cfg["redaction_reason"] in red and cfg["redactor"] in red, red
        assert "✓ verified" in red, red
        d.save_screenshot(str(shots / "console-trace.png"))

        # Downloads: JSON and (auditor role) a bundle ledger-verify accepts.
        d.find_element(By.ID, "download-json").click()
        got = wait(d, "the JSON download", lambda: list(downloads.glob("trace-*.json")))
        doc = json.loads(got[0].read_text())
        assert len(doc["entries"]) == len(cfg["order"]) and all(e["verified"] for e in doc["entries"])
        d.find_element(By.ID, "download-bundle").click()
        wait(d, "the reader's bundle refusal", lambda: "auditor" in text(d, "banner"))
        sign_in(d, url, cfg["auditor"], cfg["vkey"])
        open_trace(d, url, trace, len(cfg["order"]))
        d.find_element(By.ID, "download-bundle").click()
        wait(d, "the bundle download", lambda: [p for p in downloads.glob("trace-*.bundle") if p.stat().st_size > 0])

        # Follow: an event appended after the page loaded appears, verified.
        sign_in(d, url, cfg["reader"], cfg["vkey"])
        open_trace(d, url, trace, len(cfg["order"]))
        d.find_element(By.ID, "trace-follow").click()
        wait(d, "follow to start", lambda: d.find_element(By.ID, "trace-follow").get_attribute("aria-pressed") == "true")
        time.sleep(0.5)
        from agent_ledger import Ledger
        with Ledger(cfg["grpc"], token=cfg["writer"]) as ledger:
            ack = ledger.append("decision", cfg["agent"], correlation_id=trace, span_id="00000000000000ff",
                                parent_span_id=cfg["root_span"], action="follow-up decision")
        wait(d, "the followed event", lambda: any(i == str(ack.index) and s == "verified"
                                                  for i, s, _ in rows(d, ".wf-row")))
        # And on a filter, from the search view.
        d.get(url + "#/search?agent_id=" + cfg["agent"])
        wait(d, "search", lambda: d.execute_script("return document.body.dataset.ready") == "search")
        d.find_element(By.ID, "search-follow").click()
        time.sleep(0.5)
        with Ledger(cfg["grpc"], token=cfg["writer"]) as ledger:
            ack2 = ledger.append("tool_call", cfg["agent"], tool="followed.tool", correlation_id=trace)
        wait(d, "the followed search row", lambda: any(i == str(ack2.index) and s == "verified"
                                                       for i, s, _ in rows(d, "#results tbody tr")))
    finally:
        d.quit()

    # Through a proxy that alters one event's bytes and another's decoded
    # fields: both marked failed, the rest verified, a banner.
    order = cfg["order"]
    bytes_victim, field_victim = cfg["tool_indexes"][0], cfg["tool_indexes"][1]

    mode = {"what": "events"}

    def alter(doc):
        if mode["what"] == "checkpoint":
            # A checkpoint claiming another root: its signature fails.
            lines = doc["checkpoint"]["note"].split("\n")
            root = base64.b64decode(lines[2])
            lines[2] = base64.b64encode(bytes([root[0] ^ 1]) + root[1:]).decode()
            doc["checkpoint"]["note"] = "\n".join(lines)
            return
        for e in doc["entries"]:
            if e["index"] == bytes_victim:
                e["entry"] = swap_bytes(e["entry"], b"sql.execute", b"sql.readonl")
            if e["index"] == field_victim:
                e["event"]["tool_name"] = "harmless.read"

    proxy = altering_proxy(url.split("//")[1].rstrip("/"), alter)
    d = browser()
    try:
        purl = f"http://127.0.0.1:{proxy.server_address[1]}/"
        sign_in(d, purl, cfg["reader"], cfg["vkey"])
        wf = open_trace(d, purl, trace, len(order))
        status = {int(i): s for i, s, _ in wf}
        assert status[bytes_victim] == "failed" and status[field_victim] == "failed", status
        assert all(s == "verified" for i, s in status.items() if i not in (bytes_victim, field_victim)), status
        banner = d.find_element(By.ID, "banner")
        assert banner.is_displayed() and "2 of" in banner.text and "FAILED" in banner.text, banner.text
        detail = select_row(d, field_victim)
        assert "disagrees with the signed entry" in detail, detail
        detail = select_row(d, bytes_victim)
        assert "inclusion proof does not lead to the signed root" in detail, detail
        d.save_screenshot(str(shots / "console-tampered.png"))
        # A forged checkpoint: nothing on the page is proven.
        mode["what"] = "checkpoint"
        wf = open_trace(d, purl, trace, len(order))
        assert all(s == "failed" for _, s, _ in wf), wf
        assert "checkpoint FAILED" in text(d, "checkpoint-status"), text(d, "checkpoint-status")
        assert "does not verify against the pinned key" in text(d, "banner"), text(d, "banner")
    finally:
        d.quit()
        proxy.shutdown()

    # A link that carries the verifier key: a responder who opens it only
    # gives an API key, and lands on the trace, verified.
    d = browser()
    try:
        d.get(url + "#/trace/" + trace + "?vkey=" + urllib.parse.quote(cfg["vkey"], safe=""))
        wait(d, "the sign-in form", lambda: d.find_element(By.ID, "signin-view").is_displayed())
        assert d.find_element(By.ID, "signin-vkey").get_attribute("value") == cfg["vkey"]
        d.find_element(By.ID, "signin-key").send_keys(cfg["reader"])
        d.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]").click()
        wait(d, "the linked trace", lambda: d.execute_script("return document.body.dataset.ready") == "trace"
             and len(d.find_elements(By.CSS_SELECTOR, ".wf-row")) >= len(order))
        assert all(s == "verified" for _, s, _ in rows(d, ".wf-row")), rows(d, ".wf-row")
    finally:
        d.quit()

    # Another tenant's reader sees nothing of this one.
    d = browser()
    try:
        sign_in(d, url, cfg["other_reader"], cfg["other_vkey"])
        d.get(url + "#/search")
        d.refresh()
        wait(d, "the other tenant's search", lambda: d.execute_script("return document.body.dataset.ready") == "search")
        assert rows(d, "#results tbody tr") == [], rows(d, "#results tbody tr")
        d.get(url + "#/trace/" + trace)
        d.refresh()
        wait(d, "the other tenant's trace view", lambda: d.execute_script("return document.body.dataset.ready") == "trace")
        assert rows(d, ".wf-row") == [] and "No events" in text(d, "waterfall"), text(d, "waterfall")
        body = d.find_element(By.TAG_NAME, "body").text
        assert cfg["agent"] not in body, body
    finally:
        d.quit()
    print(json.dumps({"ok": True}))


def tampered_phase(cfg):
    d = browser()
    try:
        sign_in(d, cfg["console"], cfg["reader"], cfg["vkey"])
        wf = open_trace(d, cfg["console"], cfg["trace"], 1)
        status = {int(i): s for i, s, _ in wf}
        assert status[cfg["tampered"]] == "failed", status
        assert all(s == "verified" for i, s in status.items() if i != cfg["tampered"]), status
        banner = d.find_element(By.ID, "banner")
        assert banner.is_displayed() and "FAILED" in banner.text, banner.text
    finally:
        d.quit()
    print(json.dumps({"ok": True}))


def render_phase(cfg):
    """Loads the trace page afresh `runs` times; prints the timings."""
    d = browser()
    try:
        sign_in(d, cfg["console"], cfg.get("reader", ""), cfg["vkey"])
        out = []
        for _ in range(cfg.get("runs", 5)):
            d.get("about:blank")
            d.get(cfg["console"] + "#/trace/" + cfg["trace"])
            wait(d, "the trace", lambda: d.execute_script("return document.body.dataset.ready") == "trace", 120)
            t = d.execute_script("return window.ledgerTiming")
            assert t["events"] == cfg["events"], t
            assert all(r[1] == "verified" for r in rows(d, ".wf-row")), "not all verified"
            t["transfer_bytes"] = d.execute_script(
                "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
                ".reduce((a, e) => a + e.transferSize, 0)")
            out.append(t)
        print(json.dumps(out))
    finally:
        d.quit()


if __name__ == "__main__":
    phase, path = sys.argv[1], sys.argv[2]
    cfg = json.loads(pathlib.Path(path).read_text())
    {"main": main_phase, "tampered": tampered_phase, "render": render_phase}[phase](cfg)
