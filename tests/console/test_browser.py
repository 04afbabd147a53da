"""The console in a real browser: Debian's headless chromium driven through its chromedriver (selenium).

Upload a patient and see its cards and chart; open a rule; compare two releases; open a decision from the audit
log. With PACECDS_CONSOLE_SCREENSHOTS=DIR each page's screenshot is written there (the README's are made with
DIR=docs/console). Skips, saying why, where chromium or chromedriver is not installed (.ci/run installs them).
"""
import os
import shutil
import threading
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.console.conftest import FLARE, FLARE_NOW, expected_summary, record_flare_decision

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="headless browser tests need Debian's chromium and chromium-driver "
           "(apt-get install chromium chromium-driver; .ci/run installs them)")


@pytest.fixture
def server(app):
    from werkzeug.serving import make_server

    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join(5)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--force-device-scale-factor=1", "--disable-extensions",
                "--no-first-run", "--disable-background-networking"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def shot(driver, name: str) -> None:
    target = os.environ.get("PACECDS_CONSOLE_SCREENSHOTS")
    if not target:
        return
    Path(target).mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height), 600), 2400))
    driver.save_screenshot(str(Path(target) / f"{name}.png"))
    driver.set_window_size(1280, 1000)


def no_script_ran(driver) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    assert driver.find_elements(By.TAG_NAME, "script") == []
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018


def submit_upload(driver, base: str, path: Path, now: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/console/workbench")
    driver.find_element(By.ID, "upload").send_keys(str(path))
    now_box = driver.find_element(By.ID, "now")
    now_box.clear()
    now_box.send_keys(now)
    click_and_wait(driver, driver.find_element(By.ID, "evaluate"))


def click_and_wait(driver, element) -> None:
    """Click a submit button and wait until its page has been replaced (the next page is then loaded)."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    element.click()
    WebDriverWait(driver, 30).until(expected_conditions.staleness_of(element))


def test_upload_a_patient_and_see_cards_and_chart(server, browser):
    from selenium.webdriver.common.by import By

    submit_upload(browser, server, EXAMPLES / "patients" / FLARE, FLARE_NOW)
    cards = browser.find_elements(By.CSS_SELECTOR, "#cards article.card")
    assert len(cards) == 1
    assert expected_summary(FLARE, "pacing.flare-scale-back") in cards[0].find_element(By.CSS_SELECTOR, ".summary").text
    assert cards[0].get_attribute("data-indicator") == "warning"
    # the indicator colour is the card's left edge, as an EHR shows it (orange for warning)
    assert cards[0].value_of_css_property("border-left-color") in ("rgba(221, 107, 32, 1)", "rgb(221, 107, 32)")
    assert cards[0].find_element(By.CSS_SELECTOR, ".detail strong").text == "7.5/10"
    assert "\\" not in cards[0].find_element(By.CSS_SELECTOR, ".detail").text  # Markdown escapes rendered
    chart = browser.find_element(By.CSS_SELECTOR, "svg.pacing-chart")
    assert chart.size["width"] > 300
    assert len(chart.find_elements(By.CSS_SELECTOR, "rect.bar")) == 14
    # the pacing fact's current flare episode shaded on the steps and pain panels; its quota and flare floor drawn
    assert len(chart.find_elements(By.CSS_SELECTOR, "rect.flare")) == 2
    assert "quota 4400" in chart.text and "flare floor 2200" in chart.text
    rows = browser.find_elements(By.CSS_SELECTOR, "table.chart-data tbody tr")
    assert len(rows) == 28
    assert "Layla Haddad" in browser.find_element(By.CSS_SELECTOR, "section.patient h2").text
    assert browser.current_url.endswith("/console/workbench")  # nothing about the patient in the address
    no_script_ran(browser)
    shot(browser, "workbench")


def test_hostile_patient_name_is_shown_as_text(server, browser, tmp_path):
    import json

    from selenium.webdriver.common.by import By

    from tests.console.test_hostile import HOSTILE, hostile_bundle

    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(hostile_bundle()))
    submit_upload(browser, server, path, FLARE_NOW)
    assert browser.find_element(By.CSS_SELECTOR, "section.patient h2").text == " ".join(HOSTILE)
    assert browser.find_elements(By.CSS_SELECTOR, "img, svg[onload], b[onmouseover]") == []
    no_script_ran(browser)


def test_open_a_rule(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{server}/console/rules")
    shot(browser, "rules")
    click_and_wait(browser, browser.find_element(By.LINK_TEXT, "pacing.flare-scale-back"))
    assert browser.find_element(By.CSS_SELECTOR, "h1 .rule-id").text == "pacing.flare-scale-back"
    assert "Nielson WR" in browser.find_element(By.CSS_SELECTOR, "ol.evidence").text
    # the rule's numbers are parameters of the pacing fact it reads
    assert "flare_rise" in browser.find_element(By.ID, "fact-params-pacing").text
    no_script_ran(browser)
    shot(browser, "rule")


def test_compare_two_releases(server, browser):
    from selenium.webdriver.common.by import By

    from tests.console.test_pages import PACING_2_0, RELEASE_1_0_0, _have_revisions

    if not _have_revisions(RELEASE_1_0_0, PACING_2_0):
        pytest.skip("this checkout has no history back to release 1.0.0 (a shallow clone)")
    browser.get(f"{server}/console/releases")
    for field, value in (("old", f"git:{RELEASE_1_0_0}"), ("new", f"git:{PACING_2_0}")):
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    click_and_wait(browser, browser.find_element(By.ID, "compare"))
    diff = browser.find_element(By.ID, "diff").text
    assert "pacecds-core 1.0.0 → pacecds-core 1.1.0" in diff
    assert "pacing.flare-scale-back 1.0.0 → 2.0.0" in diff
    kinds = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "table.diff .kind")]
    assert "threshold" in kinds and "card" in kinds and "condition" in kinds
    no_script_ran(browser)
    shot(browser, "releases")


def test_open_a_decision_from_the_audit_log(server, browser, client):
    from selenium.webdriver.common.by import By

    card = record_flare_decision(client)["response"]["cards"][0]
    assert client.post("/cds-services/pacing-review/feedback", json={"feedback": [{
        "card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-20T12:05:00Z",
        "overrideReason": {"reason": card["overrideReasons"][0]}}]}).status_code == 200
    browser.get(f"{server}/console/audit")
    shot(browser, "audit")
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "a.decision-link"))
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Decision ")
    assert "Pain flare" in browser.find_element(By.ID, "cards").text
    assert "ferritin.age_days" in browser.find_element(By.ID, "explain").text
    no_script_ran(browser)
    shot(browser, "decision")
    browser.get(f"{server}/console/audit/stats")
    table = browser.find_element(By.CSS_SELECTOR, "table.stats").text
    assert "pacing.flare-scale-back" in table and card["overrideReasons"][0]["display"] in table
    assert "1 patients" in browser.find_element(By.ID, "per-patient").text
    shot(browser, "stats")


# ---- signed-in use, over TLS (the console refuses plain http when it has users) ------------------------------

@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (the browser is told to accept it)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return str(folder / "cert.pem"), str(folder / "key.pem")


@pytest.fixture
def tls_server(signin_app, tls_files):
    from werkzeug.serving import make_server

    httpd = make_server("127.0.0.1", 0, signin_app, threaded=True, ssl_context=tls_files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join(5)


@pytest.fixture
def tls_browser(browser):
    browser.execute_cdp_cmd("Security.setIgnoreCertificateErrors", {"ignore": True})  # our self-signed test cert
    return browser


def browser_sign_in(driver, base: str, username: str, wanted: str) -> None:
    from selenium.webdriver.common.by import By

    from tests.console.conftest import PASSWORDS

    driver.get(f"{base}{wanted}")
    assert driver.current_url == f"{base}/console/signin"  # sent to sign in; the page asked for is kept
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(PASSWORDS[username])
    if username == "carla":
        shot(driver, "signin")
    driver.find_element(By.CSS_SELECTOR, "form.signin button[type=submit]").click()
    wait_for(driver, lambda d: d.current_url == f"{base}{wanted}")


def wait_for(driver, condition):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 30).until(condition)


def test_clinician_signs_in_uses_the_workbench_and_is_refused_the_log(tls_server, tls_browser, signin_app):
    from selenium.webdriver.common.by import By

    from tests.console.conftest import https_client

    stored = record_flare_decision(https_client(signin_app))
    browser = tls_browser
    browser_sign_in(browser, tls_server, "carla", "/console/workbench")
    assert "carla · clinician" in browser.find_element(By.CSS_SELECTOR, "header.top").text
    assert browser.find_elements(By.LINK_TEXT, "Decision log") == []
    browser.find_element(By.ID, "upload").send_keys(str(EXAMPLES / "patients" / FLARE))
    now_box = browser.find_element(By.ID, "now")
    now_box.clear()
    now_box.send_keys(FLARE_NOW)
    click_and_wait(browser, browser.find_element(By.ID, "evaluate"))
    cards = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#cards article.card"))
    assert len(cards) == 1 and "Pain flare" in cards[0].text
    assert browser.find_element(By.CSS_SELECTOR, "svg.pacing-chart").size["width"] > 300
    # the chart a pacing card links to (by its uuid) opens for the clinician
    card = stored["response"]["cards"][0]
    browser.get(f"{tls_server}/console/card/{card['uuid']}")
    assert card["summary"] in browser.find_element(By.ID, "cards").text
    assert "quota" in browser.find_element(By.CSS_SELECTOR, "svg.levels").text
    no_script_ran(browser)
    shot(browser, "card")
    browser.get(f"{tls_server}/console/audit")
    assert "clinician" in browser.find_element(By.CSS_SELECTOR, "p.message").text
    browser.find_element(By.CSS_SELECTOR, "form.signout button").click()
    wait_for(browser, lambda d: d.current_url == f"{tls_server}/console/signin")
    browser.get(f"{tls_server}/console/workbench")
    assert browser.current_url == f"{tls_server}/console/signin"


def test_auditor_signs_in_and_opens_the_decision_log(tls_server, tls_browser, signin_app):
    from selenium.webdriver.common.by import By

    from tests.console.conftest import https_client

    record_flare_decision(https_client(signin_app))
    browser = tls_browser
    browser_sign_in(browser, tls_server, "arto", "/console/audit")
    assert "arto · auditor" in browser.find_element(By.CSS_SELECTOR, "header.top").text
    browser.find_element(By.CSS_SELECTOR, "a.decision-link").click()
    assert "Pain flare" in wait_for(browser, lambda d: d.find_elements(By.ID, "cards"))[0].text
    browser.get(f"{tls_server}/console/audit/stats")
    assert "pacing.flare-scale-back" in browser.find_element(By.CSS_SELECTOR, "table.stats").text
    assert "Cards per patient" in browser.find_element(By.ID, "per-patient").text
    no_script_ran(browser)
